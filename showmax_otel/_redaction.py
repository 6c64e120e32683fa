"""Keep secrets out of telemetry: query parameters, URLs in text, headers.

Exception messages and stack traces are kept, since they are what an
engineer needs, but any URL inside them has the values of secret-looking
query parameters replaced, and so has the password of a URL that carries
one (`https://user:password@host/`). A parameter is secret-looking when its
name contains one of the configured words, case-insensitively; a header is
secret when its name is one of the configured names, case-insensitively.

The same rules apply to attributes named after headers the way the HTTP
semantic conventions name captured headers
(`http.request.header.authorization`, `http.response.header.set-cookie`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote_plus, unquote, unquote_plus

__all__ = ["REDACTED", "Redactor"]

REDACTED = "REDACTED"

# Words that make a header secret wherever they appear in its name.
_SECRET_HEADER_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "auth",
    "cookie",
    "session",
    "credential",
    "signature",
)

# name=value pairs after a '?' or '&' inside any text (a URL in a message).
_PAIR_IN_TEXT = re.compile(
    r"(?P<lead>[?&;])(?P<name>[^=&#\s?;]+)=(?P<value>[^&#\s;'\"]*)"
)
# scheme://user:password@ inside any text; the user name is kept.
_PASSWORD_IN_URL = re.compile(
    r"(?P<lead>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*):(?P<password>[^/@\s]+)@"
)
_HEADER_ATTRIBUTE_PREFIXES = ("http.request.header.", "http.response.header.")
_QUERY_SEPARATORS = re.compile(r"([&;])")


class Redactor:
    """Redacts query parameters and headers by configured name patterns."""

    def __init__(self, params: Iterable[str], headers: Iterable[str]) -> None:
        self._param_words = tuple(p.lower() for p in params if p)
        self._headers = frozenset(h.lower().replace("_", "-") for h in headers if h)

    @property
    def param_words(self) -> tuple[str, ...]:
        """The words that make a parameter secret, lowercase."""
        return self._param_words

    def is_secret_param(self, name: str) -> bool:
        lowered = name.lower()
        return any(word in lowered for word in self._param_words)

    def is_secret_header(self, name: str) -> bool:
        """Listed by name, or named like a credential (`X-Access-Token`).

        Header names carry their secrets in many spellings (`X-CSRF-Token`,
        `X-Amz-Security-Token`, `Api-Key`), so beyond the configured names a
        header is secret when its name contains one of these words.
        """
        lowered = name.lower().replace("_", "-")
        if lowered in self._headers:
            return True

        return any(word in lowered for word in _SECRET_HEADER_WORDS)

    def is_secret_attribute(self, key: str) -> bool:
        """Whether an attribute carries a secret header, by the HTTP conventions."""
        lowered = key.lower()
        for prefix in _HEADER_ATTRIBUTE_PREFIXES:
            if lowered.startswith(prefix):
                return self.is_secret_header(lowered[len(prefix) :])

        return False

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """A copy of `headers` with the values of secret ones replaced."""
        return {
            name: REDACTED if self.is_secret_header(name) else value
            for name, value in headers.items()
        }

    def query(self, query_string: str) -> str:
        """A query string with secret-looking values replaced.

        Pairs are split on '&' and ';' (servers use both); everything else
        is kept as it was written. A value that is itself an encoded URL
        (`next=https%3A%2F%2F...%3Ftoken%3D...`) is redacted as a URL.
        """
        if not query_string or not self._param_words or "=" not in query_string:
            return query_string
        parts = _QUERY_SEPARATORS.split(query_string)
        changed = False
        for index in range(0, len(parts), 2):
            name, equals, value = parts[index].partition("=")
            if not equals:
                continue
            if self.is_secret_param(name) or self.is_secret_param(unquote_plus(name)):
                parts[index] = f"{name}={REDACTED}"
                changed = True
            elif "%" in value:
                decoded = unquote_plus(value)
                cleaned = self.text(decoded)
                if cleaned != decoded:
                    parts[index] = f"{name}={quote_plus(cleaned, safe=':/')}"
                    changed = True

        return "".join(parts) if changed else query_string

    def text(self, text: str) -> str:
        """Any text, with secrets in the URLs it contains replaced.

        Two kinds: values of secret-looking query parameters, and the
        password part of `scheme://user:password@host`.
        """
        if "@" in text and "://" in text:
            text = _PASSWORD_IN_URL.sub(rf"\g<lead>:{REDACTED}@", text)
        if "=" not in text or not self._param_words:
            return text

        def replace(match: re.Match[str]) -> str:
            # Names are matched decoded too: `%74oken` is `token` to a server.
            name = match.group("name")
            if self.is_secret_param(name) or self.is_secret_param(unquote(name)):
                return f"{match.group('lead')}{match.group('name')}={REDACTED}"
            return match.group(0)

        return _PAIR_IN_TEXT.sub(replace, text)
