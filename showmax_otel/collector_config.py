"""Check an OpenTelemetry Collector config offline.

No collector binary with our components can be installed everywhere the
package is tested, so this module reads a config the way the collector would
and checks it against the component schemas the OpenTelemetry projects
generate (``config.schema.yaml``; the folder's README explains the dialect),
plus the rules a schema cannot express: pipelines name defined components,
``memory_limiter`` comes first, storage and auth extensions are enabled,
secrets come from the environment, wide listeners use TLS and auth, and the
deployment files in ``collector/`` agree with the config.

The command is ``showmax-otel check-collector-config [FILE ...]``. Several
files are merged in order, as ``otelcol-contrib --config A --config B`` merges
them. Where the schema folder cannot be found, the checks that need no schema
still run and a note says where the folder was looked for.

Limitation: this is a reading of the config, not the collector's own
validation. Components missing from the schema index are reported but their
keys go unchecked; values that Go types parse themselves (levels, component
IDs, enums) are not type-checked; cross-field rules are those written here
(the collector has more); a host taken from ``${env:...}`` is judged by its
default only; and the deployment files are read in the forms this repository
uses (compose volumes, ``k8s/*.yaml`` workloads, a unit's ``[Service]``
lines). ``otelcol-contrib validate`` on the pinned binary remains the final word.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONFIG",
    "ERROR",
    "INFO",
    "SCHEMA_DIR_ENV",
    "WARNING",
    "Finding",
    "add_arguments",
    "check_config",
    "find_schema_dir",
    "run",
]

DEFAULT_CONFIG = "otel-collector.yaml"
SCHEMA_DIR_ENV = "SHOWMAX_OTEL_COLLECTOR_SCHEMA_DIR"

ERROR = "error"
WARNING = "warning"
INFO = "info"
# Errors and warnings fail the command; notes only inform.
_FAILING = frozenset({ERROR, WARNING})

_SIGNALS = ("traces", "metrics", "logs", "profiles")
_KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
_KIND_SINGULAR = {
    "receivers": "receiver",
    "processors": "processor",
    "exporters": "exporter",
    "extensions": "extension",
    "connectors": "connector",
}
_COMPONENT_TYPE = re.compile(r"[A-Za-z][0-9A-Za-z_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Go's time.ParseDuration syntax: "300ms", "1h30m", "0".
_GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")
_REFERENCE = re.compile(
    r"\$\{(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):)?(?P<body>[^}]*)\}"
)
_BARE_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
_PINNED_VERSION = re.compile(r"otelcol-contrib\D{0,20}?v?(\d+\.\d+\.\d+)")

# Keys whose values are credentials wherever they appear.
_SECRET_KEYS = frozenset(
    {
        "token",
        "tokens",
        "bearer_token",
        "access_token",
        "auth_token",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "hmac_key",
        "key_pem",
        "client_secret",
        "secret",
        "secret_key",
        "private_key",
        "sasl_password",
    }
)
# Header names whose values are credentials.
_SECRET_HEADER = re.compile(
    r"(?i)(authorization|cookie|api[-_]?key|token|secret|password)"
)
# Credentials recognisable by their shape, in any value.
_LITERAL_CREDENTIALS = (
    (
        "a Bearer or Basic credential",
        re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]{8,}"),
    ),
    ("a JSON Web Token", re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    (
        "a password inside a URL",
        re.compile(r"(?i)[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@"),
    ),
)
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0"})
# Exporters that only print or write locally: no queue or retry expected.
_LOCAL_EXPORTERS = frozenset({"debug", "file", "nop", "logging"})


# -- findings -----------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One problem found in a collector config or in its deployment files.

    `where` is a dotted key path (``receivers.otlp.protocols.grpc.endpoint``,
    list items as ``[0]``); `file` and `line` say where it was written when
    that is known.
    """

    severity: str
    where: str
    message: str
    fix: str
    file: str = ""
    line: int | None = None

    @property
    def fails(self) -> bool:
        """True for errors and warnings, which make the check fail."""
        return self.severity in _FAILING

    def format(self) -> str:
        location = self.file
        if location and self.line:
            location = f"{location}:{self.line}"
        text = f"{self.severity}: {self.where}: {self.message}"
        if location:
            text = f"{location}: {text}"
        if self.fix:
            text += f"\n    fix: {self.fix}"

        return text


Path_ = tuple[Any, ...]


def _where(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)

    return text or "(top level)"


def _suggest(word: str, candidates: Sequence[str] | set[str]) -> str:
    matches = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else ""


def _did_you_mean(word: str, candidates: Sequence[str] | set[str]) -> str:
    match = _suggest(word, candidates)
    return f"; did you mean `{match}`?" if match else ""


# -- YAML with line numbers ---------------------------------------------------


@lru_cache(maxsize=1)
def _loader() -> Any:
    """A safe loader that reads scalars as the collector's YAML 1.2 parser does.

    PyYAML follows YAML 1.1, where `on`, `yes` and `no` are booleans and dates
    become datetime objects; the collector reads all of them as strings.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    bool_tag = "tag:yaml.org,2002:bool"
    timestamp_tag = "tag:yaml.org,2002:timestamp"
    Loader.yaml_implicit_resolvers = {
        first: [
            (tag, rx) for tag, rx in resolvers if tag not in (bool_tag, timestamp_tag)
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )

    return Loader


@dataclass
class _Document:
    """One YAML file: its data and the line where each key path was written."""

    path: Path
    display: str
    data: Any
    lines: dict[Path_, int]
    text: str


class _ConfigFileError(Exception):
    """The file cannot be read at all (missing, unreadable): a usage error."""


def _read_yaml(
    path: Path, display: str, *, multi: bool = False
) -> tuple[_Document | None, list[Finding]]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _ConfigFileError(f"cannot read {display}: {exc}") from exc

    loader = _loader()
    try:
        nodes = list(yaml.compose_all(text, Loader=loader))
        documents = list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [
            Finding(
                ERROR,
                "(file)",
                f"not valid YAML: {problem}",
                "fix the YAML syntax at the line shown",
                display,
                mark.line + 1 if mark is not None else None,
            )
        ]

    findings: list[Finding] = []
    lines: dict[Path_, int] = {}
    for index, node in enumerate(nodes):
        prefix: Path_ = (index,) if multi else ()
        for duplicate, line in _index_node(node, prefix, lines):
            findings.append(
                Finding(
                    ERROR,
                    _where(duplicate),
                    "key written twice in the same mapping; the collector refuses "
                    "the file",
                    "keep one of the two entries",
                    display,
                    line,
                )
            )
    if multi:
        data: Any = documents
    else:
        data = documents[0] if documents else None

    return _Document(path, display, data, lines, text), findings


def _index_node(
    node: Any, path: Path_, lines: dict[Path_, int]
) -> list[tuple[Path_, int]]:
    """Record the line of every key and list item; return duplicate keys."""
    import yaml

    duplicates: list[tuple[Path_, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key == "<<":
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append((path + (key,), line))
            seen.add(key)
            lines[path + (key,)] = line
            duplicates += _index_node(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            duplicates += _index_node(item, path + (index,), lines)

    return duplicates


def _merge(base: Any, overlay: Any) -> Any:
    """Merge two configs as the collector merges its --config files.

    Mappings merge key by key; anything else, lists included, is replaced.
    """
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged

    return overlay


# -- references to the environment --------------------------------------------


@dataclass(frozen=True)
class _Reference:
    """A `${...}` reference inside a value."""

    scheme: str
    name: str
    default: str | None
    text: str


def _scan_dollars(value: str) -> Iterator[tuple[str, str]]:
    """Yield ("ref", text) for `${...}`, ("bare", text) for `$NAME` and
    ("unclosed", text) for a `${` that never closes; `$$` is an escape."""
    index = 0
    while index < len(value):
        if value[index] != "$":
            index += 1
            continue
        following = value[index + 1 : index + 2]
        if following == "$":
            index += 2
            continue
        if following == "{":
            match = _REFERENCE.match(value, index)
            if match is None:
                yield "unclosed", value[index:]
                return
            yield "ref", match.group(0)
            index = match.end()
            continue
        bare = _BARE_VARIABLE.match(value, index)
        if bare is not None:
            yield "bare", bare.group(0)
            index = bare.end()
            continue
        index += 1


def _references(value: str) -> list[_Reference]:
    found = []
    for kind, text in _scan_dollars(value):
        if kind != "ref":
            continue
        match = _REFERENCE.fullmatch(text)
        if match is None:
            continue
        scheme = match.group("scheme") or "env"
        body = match.group("body")
        if scheme == "env":
            name, separator, default = body.partition(":-")
            found.append(_Reference(scheme, name, default if separator else None, text))
        else:
            found.append(_Reference(scheme, body, None, text))

    return found


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and any(
        kind == "ref" for kind, _ in _scan_dollars(value)
    )


def _resolve_default(value: Any) -> Any:
    """The value with each `${env:NAME:-default}` replaced by its default.

    References without a default stay as they are.
    """
    if not isinstance(value, str):
        return value
    resolved = value
    for reference in _references(value):
        if reference.default is not None:
            resolved = resolved.replace(reference.text, reference.default, 1)

    return resolved


def _walk_strings(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_strings(item, path + (index,))


# -- the schema folder --------------------------------------------------------


def _schema_candidates(config_path: Path | None, cwd: Path) -> list[Path]:
    """Where `find_schema_dir` looks, in order, when nothing names the folder."""
    starts: list[Path] = []
    if config_path is not None:
        starts.append(config_path.resolve().parent)
    starts.append(cwd.resolve())
    candidates: list[Path] = []
    for start in starts:
        for folder in (start, *start.parents):
            for candidate in (
                folder / "shared" / "collector-schema",
                folder.parent / "shared" / "collector-schema",
            ):
                if candidate not in candidates:
                    candidates.append(candidate)

    return candidates


def find_schema_dir(
    config_path: str | os.PathLike[str] | None = None,
    schema_dir: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[Path | None, list[Path]]:
    """Find the collector-schema folder; return it (or None) and where it looked.

    Order: `schema_dir`, then the `SHOWMAX_OTEL_COLLECTOR_SCHEMA_DIR`
    variable, then `shared/collector-schema` in the config file's folder or
    any parent of it (or next to one, as `../shared/collector-schema`), then
    the same from the current directory.
    """
    environ = os.environ if environ is None else environ
    named = schema_dir or environ.get(SCHEMA_DIR_ENV)
    if named:
        path = Path(named)
        return (path if (path / "components.yaml").is_file() else None), [path]

    candidates = _schema_candidates(
        Path(config_path) if config_path is not None else None,
        Path(cwd) if cwd is not None else Path.cwd(),
    )
    for candidate in candidates:
        if (candidate / "components.yaml").is_file():
            return candidate, candidates

    return None, candidates


@dataclass(frozen=True)
class _Context:
    """Where a schema fragment came from, to resolve its relative $refs."""

    file: Path
    repo: str  # "core" or "contrib"
    repo_dir: str  # the file's folder relative to its repository root


@dataclass
class _Shape:
    """What a schema allows at one place in the config."""

    kind: str  # "any", "object", "array", "scalar", "components"
    properties: dict[str, tuple[Any, _Context]] = field(default_factory=dict)
    open: bool = False  # unknown keys cannot be judged (an unresolved squash)
    additional: tuple[Any, _Context] | None = None
    items: tuple[Any, _Context] | None = None
    scalar_type: str | None = None
    duration: bool = False
    custom: bool = False
    map_list: bool = False
    component_kind: str = ""


@dataclass(frozen=True)
class _Component:
    kind: str
    canonical: str
    entry: Mapping[str, Any]
    alias_used: bool


class _Schemas:
    """The collector-schema folder: the component index and the schema files."""

    def __init__(self, root: Path) -> None:
        import yaml

        self.root = root
        self._files: dict[Path, Any] = {}
        index = yaml.safe_load((root / "components.yaml").read_text(encoding="utf-8"))
        self.index: dict[str, Any] = index if isinstance(index, dict) else {}
        self.ref_roots: dict[str, str] = dict(self.index.get("ref_roots") or {})
        self.types: dict[str, dict[str, _Component]] = {}
        for kind in _KINDS:
            table: dict[str, _Component] = {}
            for name, entry in (self.index.get(kind) or {}).items():
                entry = entry or {}
                table[name] = _Component(kind, name, entry, alias_used=False)
                for alias in entry.get("aliases") or ():
                    table[alias] = _Component(kind, name, entry, alias_used=True)
            self.types[kind] = table

    # -- files and references -------------------------------------------------

    def _load(self, path: Path) -> Any:
        if path not in self._files:
            import yaml

            try:
                self._files[path] = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                self._files[path] = None
        return self._files[path]

    def context_for(self, relative: str) -> _Context:
        path = self.root / relative
        parts = Path(relative).parts
        if parts and parts[0] == "hand" and len(parts) > 2:
            repo, inside = parts[1], parts[2:-1]
        else:
            repo, inside = (parts[0] if parts else "core"), parts[1:-1]
        return _Context(path, repo, "/".join(inside))

    def _package_file(
        self, repo: str, package_dir: str
    ) -> tuple[Path, _Context] | None:
        for prefix in (Path(repo), Path("hand") / repo):
            relative = prefix / package_dir / "config.schema.yaml"
            if (self.root / relative).is_file():
                return self.root / relative, self.context_for(str(relative))
        return None

    def resolve_ref(self, ref: str, context: _Context) -> tuple[Any, _Context] | None:
        """The schema a `$ref` points to, or None when it is not stored here."""
        if "/" not in ref and "." not in ref:
            document = self._load(context.file) or {}
            target = (document.get("$defs") or {}).get(ref)
            return (target, context) if target is not None else None

        repo = context.repo
        if ref.startswith("./"):
            relative = "/".join(filter(None, (context.repo_dir, ref[2:])))
        elif ref.startswith("/"):
            relative = ref[1:]
        else:
            for prefix, root in self.ref_roots.items():
                if ref.startswith(prefix):
                    repo = root.strip("/")
                    relative = ref[len(prefix) :]
                    break
            else:
                return None

        head, _, last = relative.rpartition("/")
        package, dot, name = last.partition(".")
        if not dot:
            return None
        located = self._package_file(repo, "/".join(filter(None, (head, package))))
        if located is None:
            return None
        path, target_context = located
        document = self._load(path)
        if not isinstance(document, dict):
            return None
        target = (document.get("$defs") or {}).get(name)
        if target is not None:
            return target, target_context
        if name == "config":
            return document, target_context
        return None

    # -- shapes ---------------------------------------------------------------

    def shape(self, node: Any, context: _Context, depth: int = 0) -> _Shape:
        """Flatten a schema node: follow $ref, squash allOf members."""
        if not isinstance(node, dict) or depth > 40:
            return _Shape("any")
        if "x-componentMap" in node:
            return _Shape("components", component_kind=str(node["x-componentMap"]))
        if node.get("x-customType") == "any":
            return _Shape("any")

        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self.resolve_ref(ref, context)
            if target is None:
                return _Shape("any")
            resolved = self.shape(target[0], target[1], depth + 1)
            if ref.endswith("configopaque.map_list"):
                resolved.map_list = True
            if node.get("x-customType"):
                resolved.custom = True
            return resolved

        shape = _Shape("any")
        properties = node.get("properties")
        members = node.get("allOf")
        if isinstance(properties, dict) or isinstance(members, list):
            shape.kind = "object"
            for key, child in (properties or {}).items():
                shape.properties[str(key)] = (child, context)
            for member in members or ():
                squashed = self.shape(member, context, depth + 1)
                if squashed.kind == "object":
                    shape.properties.update(squashed.properties)
                    shape.open = shape.open or squashed.open
                else:
                    # A squashed struct we cannot see may add any key.
                    shape.open = True
        additional = node.get("additionalProperties")
        if isinstance(additional, dict):
            shape.kind = "object"
            shape.additional = (additional, context)

        declared = node.get("type")
        if shape.kind == "any":
            if declared == "array":
                shape.kind = "array"
                items = node.get("items")
                shape.items = (items, context) if isinstance(items, dict) else None
            elif declared in ("string", "integer", "boolean", "number"):
                shape.kind = "scalar"
                shape.scalar_type = str(declared)
            elif declared == "object":
                shape.kind = "object"
                shape.open = True
        custom = node.get("x-customType")
        shape.custom = bool(custom)
        shape.duration = node.get("format") == "duration" or custom == "time.Duration"

        return shape

    def component(self, kind: str, type_name: str) -> _Component | None:
        return self.types.get(kind, {}).get(type_name)

    def component_shape(self, component: _Component) -> _Shape:
        relative = component.entry.get("schema")
        if not isinstance(relative, str):
            return _Shape("any")
        context = self.context_for(relative)
        document = self._load(context.file)
        if not isinstance(document, dict):
            return _Shape("any")
        ref = component.entry.get("ref")
        node = (document.get("$defs") or {}).get(ref) if ref else document
        return self.shape(node, context)

    def top_level_shape(self) -> _Shape:
        relative = self.index.get("top_level")
        if not isinstance(relative, str):
            return _Shape("any")
        context = self.context_for(relative)
        return self.shape(self._load(context.file), context)


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


# -- the checker --------------------------------------------------------------


class _Checker:
    """Runs every rule over one merged config and collects findings."""

    def __init__(
        self,
        documents: list[_Document],
        data: Any,
        schemas: _Schemas | None,
        pinned_version: str | None,
    ) -> None:
        self.documents = documents
        self.data = data if isinstance(data, dict) else {}
        self.schemas = schemas
        self.pinned_version = pinned_version
        self.findings: list[Finding] = []

    # -- reporting ------------------------------------------------------------

    def _locate(self, path: Path_) -> tuple[str, int | None]:
        for length in range(len(path), -1, -1):
            prefix = path[:length]
            for document in reversed(self.documents):
                if prefix in document.lines:
                    return document.display, document.lines[prefix]
        return (self.documents[0].display if self.documents else ""), None

    def add(self, severity: str, path: Path_, message: str, fix: str) -> None:
        display, line = self._locate(path)
        self.findings.append(
            Finding(severity, _where(path), message, fix, display, line)
        )

    # -- entry point ----------------------------------------------------------

    def run(self) -> list[Finding]:
        if not self.data:
            self.add(
                ERROR,
                (),
                "the config is empty",
                "write receivers, processors, exporters and a service section",
            )
            return self.findings

        if self.schemas is not None:
            self._check_against_schema((), self.data, self.schemas.top_level_shape())
        else:
            self._check_component_names()
        self._check_service()
        self._check_memory_limiter()
        self._check_extension_references()
        self._check_exporters()
        self._check_listeners()
        self._check_values()

        return self.findings

    # -- schema ---------------------------------------------------------------

    def _check_against_schema(self, path: Path_, value: Any, shape: _Shape) -> None:
        if value is None or shape.kind == "any":
            return
        if _is_reference(value) and not isinstance(value, (dict, list)):
            # Resolved at load time; the environment may supply any type.
            return

        if shape.kind == "components":
            self._check_component_map(path, value, shape.component_kind)
        elif shape.kind == "object":
            self._check_object(path, value, shape)
        elif shape.kind == "array":
            self._check_array(path, value, shape)
        else:
            self._check_scalar(path, value, shape)

    def _check_object(self, path: Path_, value: Any, shape: _Shape) -> None:
        if shape.map_list and isinstance(value, list):
            return
        if not isinstance(value, dict):
            self.add(
                ERROR,
                path,
                f"expects a mapping of settings, got {_describe(value)}",
                "write the settings as `key: value` lines under this key",
            )
            return
        assert self.schemas is not None
        for key, child in value.items():
            key_text = str(key)
            child_path = path + (key,)
            if key_text in shape.properties:
                node, context = shape.properties[key_text]
                self._check_against_schema(
                    child_path, child, self.schemas.shape(node, context)
                )
            elif shape.additional is not None:
                node, context = shape.additional
                self._check_against_schema(
                    child_path, child, self.schemas.shape(node, context)
                )
            elif not shape.open:
                known = sorted(shape.properties)
                suggestion = _suggest(key_text, known)
                self.add(
                    ERROR,
                    child_path,
                    f"unknown key `{key_text}`{_did_you_mean(key_text, known)}",
                    f"rename it to `{suggestion}`"
                    if suggestion
                    else "remove it; the keys accepted here are: " + ", ".join(known),
                )

    def _check_array(self, path: Path_, value: Any, shape: _Shape) -> None:
        if shape.map_list and isinstance(value, dict):
            # A map list also accepts a plain `name: value` mapping.
            return
        if not isinstance(value, list):
            self.add(
                WARNING,
                path,
                f"expects a list, got {_describe(value)}",
                "write the value as a list: `[a, b]` or one `- item` per line",
            )
            return
        if shape.items is None:
            return
        assert self.schemas is not None
        item_shape = self.schemas.shape(*shape.items)
        plain_strings = bool(path) and str(path[-1]).endswith("_statements")
        for index, item in enumerate(value):
            if plain_strings and isinstance(item, str):
                # Transform statements may be plain OTTL strings.
                continue
            self._check_against_schema(path + (index,), item, item_shape)

    def _check_scalar(self, path: Path_, value: Any, shape: _Shape) -> None:
        if isinstance(value, (dict, list)):
            self.add(
                ERROR,
                path,
                f"expects a single value ({shape.scalar_type}), got {_describe(value)}",
                "write one value on the same line as the key",
            )
            return
        if shape.duration:
            self._check_duration(path, value)
            return
        if shape.custom:
            # Custom Go types (levels, IDs, enums) parse their own text forms.
            return
        expected = shape.scalar_type
        wrong = (
            (expected == "boolean" and not isinstance(value, bool))
            or (
                expected == "integer"
                and (isinstance(value, bool) or not isinstance(value, int))
            )
            or (
                expected == "number"
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
            )
        )
        if wrong:
            self.add(
                ERROR,
                path,
                f"expects {_article(expected)} {expected}, got {value!r}",
                f"write {_example(expected)}",
            )

    def _check_duration(self, path: Path_, value: Any) -> None:
        if isinstance(value, bool):
            self.add(
                ERROR, path, f"expects a duration, got {value!r}", "write e.g. `5s`"
            )
        elif isinstance(value, int):
            if value != 0:
                self.add(
                    ERROR,
                    path,
                    f"a bare number is read as nanoseconds: {value} means {value}ns",
                    f"write the unit, e.g. `{value}s` or `{value}ms`",
                )
        elif isinstance(value, str) and not _GO_DURATION.fullmatch(value.strip()):
            self.add(
                ERROR,
                path,
                f"`{value}` is not a Go duration",
                "write a number with a unit: ns, us, ms, s, m or h (e.g. `500ms`, "
                "`1h30m`)",
            )

    def _check_component_map(self, path: Path_, value: Any, kind: str) -> None:
        if not isinstance(value, dict):
            self.add(
                ERROR,
                path,
                f"expects a mapping of {kind}, got {_describe(value)}",
                f"write one `type/name:` entry per {_KIND_SINGULAR.get(kind, kind)}",
            )
            return
        assert self.schemas is not None
        for component_id, config in value.items():
            component = self._component_type(path + (component_id,), kind, component_id)
            if component is None:
                continue
            self._check_against_schema(
                path + (component_id,), config, self.schemas.component_shape(component)
            )

    def _component_type(
        self, path: Path_, kind: str, component_id: Any
    ) -> _Component | None:
        """Check one component id's type against the index and the pinned version."""
        type_name = str(component_id).split("/", 1)[0]
        name = str(component_id)[len(type_name) + 1 :]
        singular = _KIND_SINGULAR.get(kind, kind)
        if not _COMPONENT_TYPE.fullmatch(type_name) or (
            "/" in str(component_id) and not name
        ):
            self.add(
                ERROR,
                path,
                f"`{component_id}` is not a valid component id",
                "write `type` or `type/name`: the type starts with a letter and holds "
                "letters, digits and `_`; the name after `/` is not empty",
            )
            return None
        if self.schemas is None:
            return None

        component = self.schemas.component(kind, type_name)
        if component is None:
            known = sorted(self.schemas.types.get(kind, {}))
            suggestion = _suggest(type_name, known)
            self.add(
                WARNING,
                path,
                f"{singular} type `{type_name}` is not in the schema index, so its "
                f"keys were not checked{_did_you_mean(type_name, known)}",
                f"rename it to `{suggestion}`"
                if suggestion
                else "check the type against the pinned collector's components, "
                "or add its schema to the schema folder",
            )
            return None

        pinned = _version_tuple(self.pinned_version)
        since = _version_tuple(component.entry.get("since"))
        if component.alias_used:
            if pinned is not None and since is not None and pinned >= since:
                self.add(
                    WARNING,
                    path,
                    f"`{type_name}` is a deprecated alias of `{component.canonical}` "
                    f"(renamed in v{'.'.join(map(str, since))}); the pinned "
                    f"{self.pinned_version} logs a deprecation warning for it",
                    f"rename it to `{component.canonical}`",
                )
            elif pinned is None and since is not None:
                self.add(
                    INFO,
                    path,
                    f"`{type_name}` is the old name of `{component.canonical}` "
                    f"(renamed in v{'.'.join(map(str, since))})",
                    "write the pinned collector version at the top of the file "
                    "(`# Pinned: otelcol-contrib X.Y.Z`) so the name can be checked",
                )
        elif pinned is not None and since is not None and pinned < since:
            aliases = component.entry.get("aliases") or []
            old = f"`{aliases[0]}`" if aliases else "its old name"
            self.add(
                ERROR,
                path,
                f"`{type_name}` appeared in v{'.'.join(map(str, since))}; the pinned "
                f"{self.pinned_version} does not know it",
                f"use {old}, or pin a newer collector",
            )

        return component

    def _check_component_names(self) -> None:
        """Without schemas, still check that component ids are well formed."""
        for kind in _KINDS:
            section = self.data.get(kind)
            if isinstance(section, dict):
                for component_id in section:
                    self._component_type((kind, component_id), kind, component_id)

    # -- service and pipelines ------------------------------------------------

    def _defined(self, kind: str) -> dict[str, Any]:
        section = self.data.get(kind)
        return (
            {str(key): value for key, value in section.items()}
            if isinstance(section, dict)
            else {}
        )

    def _pipelines(self) -> dict[str, dict[str, Any]]:
        service = self.data.get("service")
        pipelines = service.get("pipelines") if isinstance(service, dict) else None
        if not isinstance(pipelines, dict):
            return {}
        return {
            str(key): value if isinstance(value, dict) else {}
            for key, value in pipelines.items()
        }

    def _used(self, kind: str) -> set[str]:
        used: set[str] = set()
        for pipeline in self._pipelines().values():
            names = pipeline.get(kind)
            if isinstance(names, list):
                used.update(str(name) for name in names)
        return used

    def _enabled_extensions(self) -> list[str]:
        service = self.data.get("service")
        extensions = service.get("extensions") if isinstance(service, dict) else None
        return (
            [str(name) for name in extensions] if isinstance(extensions, list) else []
        )

    def _check_service(self) -> None:
        service = self.data.get("service")
        if not isinstance(service, dict):
            self.add(
                ERROR,
                ("service",),
                "no `service` section: nothing would run",
                "add `service:` with `pipelines:` naming receivers and exporters",
            )
            return
        pipelines = self._pipelines()
        if not pipelines:
            self.add(
                ERROR,
                ("service", "pipelines"),
                "no pipelines: the collector refuses to start",
                "add at least one pipeline, e.g. `logs: {receivers: [otlp], "
                "exporters: [...]}`",
            )

        connectors = self._defined("connectors")
        for pipeline_id, pipeline in pipelines.items():
            path = ("service", "pipelines", pipeline_id)
            signal = pipeline_id.split("/", 1)[0]
            if signal not in _SIGNALS:
                self.add(
                    ERROR,
                    path,
                    f"`{signal}` is not a signal{_did_you_mean(signal, _SIGNALS)}",
                    "name pipelines `traces`, `metrics`, `logs` or `profiles`, "
                    "optionally followed by `/name`",
                )
            for kind in ("receivers", "processors", "exporters"):
                self._check_pipeline_list(path, kind, pipeline.get(kind), connectors)

        enabled = self._enabled_extensions()
        defined_extensions = self._defined("extensions")
        for index, name in enumerate(enabled):
            if name not in defined_extensions:
                self.add(
                    ERROR,
                    ("service", "extensions", index),
                    f"extension `{name}` is enabled but not defined"
                    f"{_did_you_mean(name, set(defined_extensions))}",
                    f"define `{name}` under `extensions:` or remove it from "
                    "service.extensions",
                )
            elif enabled.index(name) != index:
                self.add(
                    ERROR,
                    ("service", "extensions", index),
                    f"extension `{name}` is listed twice",
                    "list it once",
                )

        for kind in ("receivers", "processors", "exporters", "connectors"):
            if kind == "connectors":
                used = self._used("receivers") | self._used("exporters")
            else:
                used = self._used(kind)
            for name in self._defined(kind):
                if name not in used:
                    self.add(
                        INFO,
                        (kind, name),
                        f"{_KIND_SINGULAR[kind]} `{name}` is defined but no pipeline "
                        "uses it; the collector does not start it",
                        "add it to a pipeline, or remove it if it is meant for an "
                        "overlay",
                    )

    def _check_pipeline_list(
        self, path: Path_, kind: str, names: Any, connectors: dict[str, Any]
    ) -> None:
        if names is None or names == []:
            if kind != "processors":
                self.add(
                    ERROR,
                    path + (kind,),
                    f"the pipeline has no {kind}",
                    f"list at least one of the defined {kind}",
                )
            return
        if not isinstance(names, list):
            self.add(
                ERROR,
                path + (kind,),
                f"expects a list of {kind}, got {_describe(names)}",
                f"write `{kind}: [name, ...]`",
            )
            return

        defined = self._defined(kind)
        if kind in ("receivers", "exporters"):
            defined = {**defined, **connectors}
        for index, name in enumerate(names):
            name = str(name)
            if name not in defined:
                suggestion = _suggest(name, set(defined))
                self.add(
                    ERROR,
                    path + (kind, index),
                    f"{_KIND_SINGULAR[kind]} `{name}` is not defined"
                    f"{_did_you_mean(name, set(defined))}",
                    f"use `{suggestion}`"
                    if suggestion
                    else f"define `{name}` under `{kind}:`",
                )
            elif [str(item) for item in names].index(name) != index:
                self.add(
                    ERROR,
                    path + (kind, index),
                    f"`{name}` is listed twice in this pipeline",
                    "list it once",
                )

    def _check_memory_limiter(self) -> None:
        for pipeline_id, pipeline in self._pipelines().items():
            path = ("service", "pipelines", pipeline_id, "processors")
            processors = pipeline.get("processors")
            names = (
                [str(name) for name in processors]
                if isinstance(processors, list)
                else []
            )
            limiters = [
                index
                for index, name in enumerate(names)
                if name.split("/", 1)[0] == "memory_limiter"
            ]
            if not limiters:
                self.add(
                    ERROR,
                    path,
                    f"pipeline `{pipeline_id}` has no memory_limiter: under load the "
                    "collector grows until it is killed, losing what it holds",
                    "define `memory_limiter` under processors and put it first in "
                    "this pipeline",
                )
            elif limiters[0] != 0:
                self.add(
                    ERROR,
                    path + (limiters[0],),
                    f"memory_limiter is at position {limiters[0] + 1} in pipeline "
                    f"`{pipeline_id}`; processors before it take memory it cannot "
                    "refuse",
                    f"move `{names[limiters[0]]}` to the front of the list",
                )

        for name, config in self._defined("processors").items():
            if name.split("/", 1)[0] != "memory_limiter":
                continue
            config = config if isinstance(config, dict) else {}
            limiter_path: Path_ = ("processors", name)
            limit = config.get("limit_mib") or config.get("limit_percentage")
            if not limit:
                self.add(
                    ERROR,
                    limiter_path,
                    "memory_limiter needs `limit_mib` or `limit_percentage`; the "
                    "collector refuses it without one",
                    "set `limit_percentage: 80` (of the container or unit limit) or "
                    "`limit_mib`",
                )
            interval = config.get("check_interval")
            if not interval or interval in ("0", "0s"):
                self.add(
                    ERROR,
                    limiter_path + ("check_interval",),
                    "memory_limiter needs a non-zero `check_interval`; with none it "
                    "never measures",
                    "set `check_interval: 1s`",
                )
            for absolute, spike in (
                ("limit_mib", "spike_limit_mib"),
                ("limit_percentage", "spike_limit_percentage"),
            ):
                high, low = config.get(absolute), config.get(spike)
                if isinstance(high, int) and isinstance(low, int) and low >= high:
                    self.add(
                        ERROR,
                        limiter_path + (spike,),
                        f"`{spike}` ({low}) must be below `{absolute}` ({high})",
                        f"set `{spike}` to about a fifth of `{absolute}`",
                    )

    # -- extensions used by other components ----------------------------------

    def _components_in_use(self) -> Iterator[tuple[str, str, Any]]:
        used = {
            kind: self._used(kind) for kind in ("receivers", "processors", "exporters")
        }
        for kind, names in used.items():
            defined = self._defined(kind)
            for name in sorted(names):
                if name in defined:
                    yield kind, name, defined[name]
        enabled = set(self._enabled_extensions())
        for name, config in self._defined("extensions").items():
            if name in enabled:
                yield "extensions", name, config

    def _check_extension_references(self) -> None:
        defined = self._defined("extensions")
        enabled = set(self._enabled_extensions())
        for kind, name, config in self._components_in_use():
            for path, purpose, extension in _extension_references(config):
                full_path = (kind, name) + path
                if extension not in defined:
                    self.add(
                        ERROR,
                        full_path,
                        f"{purpose} names extension `{extension}`, which is not "
                        f"defined{_did_you_mean(extension, set(defined))}",
                        f"define `{extension}` under `extensions:` and list it in "
                        "service.extensions",
                    )
                elif extension not in enabled:
                    self.add(
                        ERROR,
                        full_path,
                        f"{purpose} names extension `{extension}`, which is not in "
                        "service.extensions, so it never starts and the component "
                        "fails",
                        f"add `{extension}` to service.extensions",
                    )

    # -- exporters: durability ------------------------------------------------

    def _check_exporters(self) -> None:
        used_exporters = self._used("exporters")
        persistent: set[str] = set()
        for name, config in self._defined("exporters").items():
            if name not in used_exporters:
                continue
            config = config if isinstance(config, dict) else {}
            type_name = name.split("/", 1)[0]
            path = ("exporters", name)
            queue = config.get("sending_queue")
            self._check_queue(path + ("sending_queue",), queue)
            if type_name in _LOCAL_EXPORTERS:
                continue

            queue_enabled = (
                isinstance(queue, dict) and queue.get("enabled", True) is not False
            )
            if type_name == "elasticsearch":
                # This exporter's queue is off unless enabled explicitly.
                queue_enabled = isinstance(queue, dict) and queue.get("enabled") is True
            if not queue_enabled:
                self.add(
                    WARNING,
                    path + ("sending_queue",),
                    f"exporter `{name}` has no sending queue: a slow or absent backend "
                    "blocks the pipeline and a restart loses what is in flight",
                    "set `sending_queue: {enabled: true, storage: <file_storage "
                    "extension>}`",
                )
            elif not (isinstance(queue, dict) and queue.get("storage")):
                self.add(
                    WARNING,
                    path + ("sending_queue", "storage"),
                    f"exporter `{name}` queues in memory: a collector restart loses "
                    "everything not yet sent",
                    "set `sending_queue.storage` to a file_storage extension",
                )
            else:
                persistent.add(name)

            retry_key = "retry" if type_name == "elasticsearch" else "retry_on_failure"
            retry = config.get(retry_key)
            if isinstance(retry, dict) and retry.get("enabled") is False:
                self.add(
                    WARNING,
                    path + (retry_key, "enabled"),
                    f"exporter `{name}` does not retry: a backend hiccup drops data",
                    f"remove `{retry_key}.enabled: false`",
                )

        for pipeline_id, pipeline in self._pipelines().items():
            processors = pipeline.get("processors")
            exporters = pipeline.get("exporters")
            if not isinstance(processors, list) or not isinstance(exporters, list):
                continue
            queued = persistent & {str(name) for name in exporters}
            for index, processor in enumerate(processors):
                if str(processor).split("/", 1)[0] == "batch" and queued:
                    self.add(
                        WARNING,
                        ("service", "pipelines", pipeline_id, "processors", index),
                        f"the batch processor holds data in memory before the "
                        f"persistent queue of {', '.join(sorted(queued))}: a crash "
                        "loses it",
                        "remove `batch` and batch in the exporter with "
                        "`sending_queue.batch`",
                    )

    def _check_queue(self, path: Path_, queue: Any) -> None:
        """The exporterhelper rules that the collector enforces at start."""
        if not isinstance(queue, dict):
            return
        if queue.get("storage") and queue.get("wait_for_result") is True:
            self.add(
                ERROR,
                path + ("wait_for_result",),
                "`wait_for_result` cannot be used with a persistent queue (`storage`)",
                "remove `wait_for_result`",
            )
        batch = queue.get("batch")
        if not isinstance(batch, dict):
            return
        batch_sizer = batch.get("sizer", queue.get("sizer", "items"))
        if batch_sizer not in ("items", "bytes") and not _is_reference(batch_sizer):
            self.add(
                ERROR,
                path + ("batch", "sizer"),
                f"the batch sizer is `{batch_sizer}`"
                + (
                    " (taken from `sending_queue.sizer`)"
                    if "sizer" not in batch
                    else ""
                )
                + "; batches accept only `items` or `bytes`",
                "set `sending_queue.batch.sizer: items`",
            )
        timeout = batch.get("flush_timeout")
        if timeout in (0, "0", "0s"):
            self.add(
                ERROR,
                path + ("batch", "flush_timeout"),
                "`flush_timeout` must be positive",
                "set e.g. `flush_timeout: 1s`",
            )
        low, high = batch.get("min_size"), batch.get("max_size")
        if isinstance(low, int) and isinstance(high, int) and 0 < high < low:
            self.add(
                ERROR,
                path + ("batch", "max_size"),
                f"`max_size` ({high}) is below `min_size` ({low})",
                "raise `max_size` or lower `min_size`",
            )
        queue_size = queue.get("queue_size")
        same_sizer = batch_sizer == queue.get("sizer", "requests")
        if (
            same_sizer
            and isinstance(low, int)
            and isinstance(queue_size, int)
            and low > queue_size
        ):
            self.add(
                ERROR,
                path + ("batch", "min_size"),
                f"`min_size` ({low}) is above `queue_size` ({queue_size}) with "
                "the same sizer: no batch could ever fill",
                "lower `min_size` or raise `queue_size`",
            )

    # -- listeners ------------------------------------------------------------

    def _check_listeners(self) -> None:
        used_receivers = self._used("receivers")
        enabled = set(self._enabled_extensions())
        for kind in ("receivers", "extensions"):
            for name, config in self._defined(kind).items():
                in_use = name in (used_receivers if kind == "receivers" else enabled)
                if not in_use:
                    continue
                for path, server in _servers(config):
                    self._check_listener((kind, name) + path, kind, server)

        # The collector's own Prometheus endpoint is a listener too.
        telemetry = _get(self.data, ("service", "telemetry", "metrics", "readers"))
        for index, reader in enumerate(
            telemetry if isinstance(telemetry, list) else []
        ):
            reader_path: Path_ = ("service", "telemetry", "metrics", "readers", index)
            prometheus = _get(reader, ("pull", "exporter", "prometheus"))
            host = prometheus.get("host") if isinstance(prometheus, dict) else None
            if isinstance(host, str) and _classify_host(host)[0] == "wildcard":
                self.add(
                    ERROR,
                    reader_path + ("pull", "exporter", "prometheus", "host"),
                    f"the collector's own metrics listen on all interfaces ({host}) "
                    "without TLS or auth",
                    "use `host: localhost`, or the pod or host address that the "
                    "scraper reaches",
                )

    def _check_listener(self, path: Path_, kind: str, server: dict[str, Any]) -> None:
        endpoint = server.get("endpoint")
        if not isinstance(endpoint, str):
            return  # the defaults bind loopback
        host, _ = _split_endpoint(endpoint)
        if host is None:
            return
        exposure, shown = _classify_host(host)
        tls = server.get("tls")
        has_tls = isinstance(tls, dict) and bool(
            tls.get("cert_file") or tls.get("cert_pem")
        )
        auth = server.get("auth")
        has_auth = isinstance(auth, dict) and bool(auth.get("authenticator"))
        missing = [
            label
            for label, present in (("TLS", has_tls), ("auth", has_auth))
            if not present
        ]
        if not missing or exposure == "loopback":
            return

        fix = (
            "bind to 127.0.0.1, or configure `tls` (cert_file, key_file) and "
            "`auth.authenticator` (e.g. bearertokenauth)"
        )
        if exposure == "wildcard":
            self.add(
                ERROR,
                path + ("endpoint",),
                f"listens on all interfaces ({shown}) without {' and '.join(missing)}",
                fix,
            )
        elif kind == "receivers" and exposure == "address":
            self.add(
                ERROR,
                path + ("endpoint",),
                f"listens beyond loopback ({shown}) without {' and '.join(missing)}: "
                "anyone who reaches it can send data",
                fix,
            )
        elif kind == "receivers":
            self.add(
                WARNING,
                path + ("endpoint",),
                f"the host comes from the environment ({shown}) and may be beyond "
                f"loopback, but the receiver has no {' and '.join(missing)}",
                fix,
            )

    # -- values: references and secrets ---------------------------------------

    def _check_values(self) -> None:
        for path, value in _walk_strings(self.data):
            for kind, text in _scan_dollars(value):
                if kind == "bare":
                    name = text[1:]
                    self.add(
                        ERROR,
                        path,
                        f"`{text}` is not expanded by the collector (since v0.107.0 "
                        "only `${...}` is); the value keeps the literal text",
                        f"write `${{env:{name}}}`, or `$${name}` for a literal dollar",
                    )
                elif kind == "unclosed":
                    self.add(
                        ERROR,
                        path,
                        f"`{text}` opens a reference that never closes",
                        "close it with `}`, or write `$$` for a literal dollar",
                    )
            for reference in _references(value):
                if reference.scheme == "env" and not _ENV_NAME.fullmatch(
                    reference.name
                ):
                    self.add(
                        ERROR,
                        path,
                        f"`{reference.text}` names an invalid environment variable "
                        f"`{reference.name}`",
                        "use letters, digits and `_`, not starting with a digit",
                    )
            self._check_secret(path, value)

    def _check_secret(self, path: Path_, value: str) -> None:
        if not value.strip():
            return
        secret_field = _is_secret_field(path, self.data)
        if secret_field:
            references = _references(value)
            if not references:
                self.add(
                    ERROR,
                    path,
                    f"{secret_field} is written literally in the config",
                    "move it to an environment variable and write `${env:NAME}` "
                    "(the deployment injects it from a secret)",
                )
                return
            for reference in references:
                if reference.default:
                    self.add(
                        ERROR,
                        path,
                        f"{secret_field} has a literal default in `{reference.text}`",
                        f"remove the default: `${{env:{reference.name}}}`",
                    )
            return

        literal = _strip_references(value)
        for label, pattern in _LITERAL_CREDENTIALS:
            if pattern.search(literal):
                self.add(
                    ERROR,
                    path,
                    f"the value contains {label}",
                    "move the credential to an environment variable and write "
                    "`${env:NAME}` in its place",
                )
                return


# -- helpers on config values -------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _article(word: str | None) -> str:
    return "an" if (word or "x")[0] in "aeiou" else "a"


def _example(expected: str | None) -> str:
    return {
        "boolean": "`true` or `false`",
        "integer": "a whole number without quotes, e.g. `16`",
        "number": "a number without quotes, e.g. `1.5`",
    }.get(expected or "", "a single value")


def _strip_references(value: str) -> str:
    for reference in _references(value):
        value = value.replace(reference.text, "")
    return value


def _is_secret_field(path: Path_, data: Any) -> str:
    """Describe the credential that `path` holds, or "" when it holds none."""
    keys = [str(part).lower() for part in path if not isinstance(part, int)]
    if not keys:
        return ""
    last = keys[-1]
    # A list of tokens: the list's key names the secret.
    if isinstance(path[-1], int) and last in _SECRET_KEYS:
        return f"`{last}`"
    if last in _SECRET_KEYS:
        return f"`{last}`"
    if len(keys) >= 2 and keys[-2] == "headers" and _SECRET_HEADER.search(last):
        return f"header `{path[-1]}`"
    # Map-list form of headers: [{name: authorization, value: ...}].
    if (
        last == "value"
        and len(path) >= 3
        and isinstance(path[-2], int)
        and str(path[-3]).lower() == "headers"
    ):
        item = _get(data, path[:-1])
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and _SECRET_HEADER.search(name):
            return f"header `{name}`"

    return ""


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _extension_references(
    config: Any, path: Path_ = ()
) -> Iterator[tuple[Path_, str, str]]:
    """Yield (path, purpose, extension id) for storage, auth and middlewares."""
    if isinstance(config, dict):
        for key, value in config.items():
            child = path + (key,)
            if key == "storage" and isinstance(value, str) and value:
                yield child, "`storage`", value
            elif key == "authenticator" and isinstance(value, str) and value:
                yield child, "`auth.authenticator`", value
            elif key == "middlewares" and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        yield child + (index, "id"), "a middleware", item["id"]
            else:
                yield from _extension_references(value, child)
    elif isinstance(config, list):
        for index, item in enumerate(config):
            yield from _extension_references(item, path + (index,))


def _servers(config: Any, path: Path_ = ()) -> Iterator[tuple[Path_, dict[str, Any]]]:
    """Yield each mapping that configures a listener (`endpoint: host:port`)."""
    if not isinstance(config, dict):
        return
    endpoint = config.get("endpoint")
    if isinstance(endpoint, str) and "://" not in endpoint:
        yield path, config
    for key, value in config.items():
        if isinstance(value, dict) and key not in ("tls", "auth"):
            yield from _servers(value, path + (key,))


def _split_endpoint(endpoint: str) -> tuple[str | None, str | None]:
    """Split `host:port`, where either may be a `${...}` reference."""
    match = re.fullmatch(
        r"(?P<host>\$\{[^}]*\}|\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>\$\{[^}]*\}|\d+))?",
        endpoint.strip(),
    )
    if match is None:
        return None, None
    return match.group("host"), match.group("port")


def _classify_host(host: str) -> tuple[str, str]:
    """Return ("loopback" | "wildcard" | "address" | "environment", shown text)."""
    references = _references(host)
    if references and host == references[0].text:
        reference = references[0]
        if (
            reference.default is not None
            and reference.default.strip() in _WILDCARD_HOSTS
        ):
            return "wildcard", f"{host}, which defaults to {reference.default or 'all'}"
        return "environment", host
    bare = host.strip()
    if bare in _WILDCARD_HOSTS:
        return "wildcard", bare or "an empty host"
    if bare in ("localhost", "::1", "[::1]") or bare.startswith("127."):
        return "loopback", bare
    return "address", bare


def _pinned_version(document: _Document) -> str | None:
    """The collector version written in the comments at the top of the file."""
    header = []
    for line in document.text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        header.append(stripped)
    match = _PINNED_VERSION.search("\n".join(header))
    return match.group(1) if match else None


# -- the deployment folder ----------------------------------------------------


@dataclass
class _Facts:
    """What the deployment files must agree with, read from the config."""

    config_path: Path
    pinned_version: str | None
    env_defaults: dict[str, str | None]
    receiver_ports: dict[int, str]
    health_port: int | None
    health_path: str
    queue_dirs: dict[str, str | None]  # directory -> the variable that may move it
    tls_dirs: set[str]


def _collect_facts(
    config_path: Path, data: dict[str, Any], pinned: str | None
) -> _Facts:
    env_defaults: dict[str, str | None] = {}
    for _, value in _walk_strings(data):
        for reference in _references(value):
            if reference.scheme == "env" and (
                reference.default is not None or reference.name not in env_defaults
            ):
                env_defaults[reference.name] = reference.default

    receiver_ports: dict[int, str] = {}
    receivers = data.get("receivers") if isinstance(data.get("receivers"), dict) else {}
    for name, config in (receivers or {}).items():
        for path, server in _servers(config):
            _, port = _split_endpoint(str(_resolve_default(server.get("endpoint"))))
            if port and port.isdigit():
                receiver_ports[int(port)] = _where((name,) + path)

    health_port: int | None = None
    health_path = "/"
    extensions = (
        data.get("extensions") if isinstance(data.get("extensions"), dict) else {}
    )
    queue_dirs: dict[str, str | None] = {}
    for name, config in (extensions or {}).items():
        config = config if isinstance(config, dict) else {}
        type_name = str(name).split("/", 1)[0]
        if type_name == "health_check":
            _, port = _split_endpoint(str(_resolve_default(config.get("endpoint", ""))))
            health_port = int(port) if port and port.isdigit() else 13133
            health_path = str(config.get("path") or "/")
        elif type_name == "file_storage":
            directory = config.get("directory", "/var/lib/otelcol/file_storage")
            references = _references(str(directory))
            variable = references[0].name if references else None
            queue_dirs[str(_resolve_default(directory))] = variable

    tls_dirs: set[str] = set()
    for path, value in _walk_strings(receivers):
        if (
            len(path) >= 2
            and path[-2] == "tls"
            and path[-1] in ("cert_file", "key_file")
        ):
            resolved = str(_resolve_default(value))
            if "${" not in resolved and "/" in resolved:
                tls_dirs.add(resolved.rsplit("/", 1)[0])

    return _Facts(
        config_path=config_path,
        pinned_version=pinned,
        env_defaults=env_defaults,
        receiver_ports=receiver_ports,
        health_port=health_port,
        health_path=health_path,
        queue_dirs=queue_dirs,
        tls_dirs=tls_dirs,
    )


_IMAGE_VERSION = re.compile(r"opentelemetry-collector-contrib:v?(\d+\.\d+\.\d+)")
_PACKAGE_VERSION = re.compile(r"otelcol-contrib[_ -]v?(\d+\.\d+\.\d+)")
# Variables a deployment may set that the config does not read.
_RUNTIME_VARIABLES = frozenset({"GOMEMLIMIT", "GOMAXPROCS", "GODEBUG", "TZ"})
_PLACEHOLDER = re.compile(
    r"(?i)(change[-_ ]?me|example|placeholder|replace|<[^>]*>|xxx)"
)
_SECRET_NAME = re.compile(r"(?i)(token|password|secret|api_?key)")


class _DeploymentChecker:
    """Checks that collector/ (compose, Kubernetes, systemd, README) agrees with the
    config: image version, ports, paths and variable names."""

    def __init__(self, folder: Path, facts: _Facts, display_root: Path) -> None:
        self.folder = folder
        self.facts = facts
        self.display_root = display_root
        self.findings: list[Finding] = []

    def _display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.display_root.resolve()))
        except ValueError:
            return str(path)

    def add(
        self,
        severity: str,
        path: Path,
        where: str,
        message: str,
        fix: str,
        line: int | None = None,
    ) -> None:
        self.findings.append(
            Finding(severity, where, message, fix, self._display(path), line)
        )

    def run(self) -> list[Finding]:
        self._check_versions()
        self._check_env_example()
        self._check_readme()
        self._check_compose()
        self._check_kubernetes()
        self._check_systemd()
        return self.findings

    # -- versions -------------------------------------------------------------

    def _text_files(self) -> Iterator[Path]:
        for path in sorted(self.folder.rglob("*")):
            if path.is_file() and path.stat().st_size < 1_000_000:
                yield path

    def _check_versions(self) -> None:
        pinned = self.facts.pinned_version
        if pinned is None:
            self.add(
                WARNING,
                self.facts.config_path,
                "(header)",
                "no pinned collector version at the top of the config, so the "
                "deployment files cannot be compared with it",
                "write `# Pinned: otelcol-contrib X.Y.Z` in the first comment lines",
            )
            return
        for path in self._text_files():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for number, line in enumerate(text.splitlines(), start=1):
                for pattern in (_IMAGE_VERSION, _PACKAGE_VERSION):
                    for match in pattern.finditer(line):
                        if match.group(1) != pinned:
                            self.add(
                                ERROR,
                                path,
                                "collector version",
                                f"names otelcol-contrib {match.group(1)}, but the "
                                f"config is pinned to {pinned}",
                                f"write {pinned} here too (or change the pin in the "
                                "config, after checking its components)",
                                number,
                            )

    # -- variables ------------------------------------------------------------

    def _check_env_example(self) -> None:
        path = self.folder / ".env.example"
        if not path.is_file():
            self.add(
                WARNING,
                path,
                "(file)",
                "no .env.example listing the variables the config reads",
                "add one line `NAME=` per variable, with placeholder values",
            )
            return
        listed = _read_env_file(path)
        for name in sorted(self.facts.env_defaults):
            if name not in listed:
                self.add(
                    ERROR,
                    path,
                    name,
                    f"the config reads ${{env:{name}}} but .env.example does not "
                    "list it",
                    f"add `{name}=` with a placeholder or the default value",
                )
        for name, (value, line) in listed.items():
            if name not in self.facts.env_defaults and name not in _RUNTIME_VARIABLES:
                self.add(
                    WARNING,
                    path,
                    name,
                    f"`{name}` is listed but the config does not read it",
                    "remove it, or use it in the config",
                    line,
                )
            if _SECRET_NAME.search(name) and value and not _PLACEHOLDER.search(value):
                self.add(
                    ERROR,
                    path,
                    name,
                    f"`{name}` looks like a real secret in an example file",
                    "leave it empty or write a placeholder such as `change-me`",
                    line,
                )

    def _check_readme(self) -> None:
        path = self.folder / "README.md"
        if not path.is_file():
            self.add(
                WARNING,
                path,
                "(file)",
                "no README explaining the deployment",
                "add collector/README.md",
            )
            return
        text = path.read_text(encoding="utf-8")
        for name in sorted(self.facts.env_defaults):
            if name not in text:
                self.add(
                    WARNING,
                    path,
                    name,
                    f"the README does not mention the variable `{name}`",
                    "document what it sets and where its value comes from",
                )
        ports = dict(self.facts.receiver_ports)
        if self.facts.health_port is not None:
            ports[self.facts.health_port] = "health_check"
        for port, source in sorted(ports.items()):
            if str(port) not in text:
                self.add(
                    WARNING,
                    path,
                    f"port {port}",
                    f"the README does not mention port {port} ({source})",
                    "list the port and what listens on it",
                )

    # -- docker compose -------------------------------------------------------

    def _check_compose(self) -> None:
        path = next(
            (
                self.folder / name
                for name in (
                    "docker-compose.yaml",
                    "docker-compose.yml",
                    "compose.yaml",
                )
                if (self.folder / name).is_file()
            ),
            None,
        )
        if path is None:
            return
        document, findings = _read_yaml(path, self._display(path))
        self.findings += findings
        if document is None or not isinstance(document.data, dict):
            return
        services = document.data.get("services")
        services = services if isinstance(services, dict) else {}
        collector = next(
            (
                (name, service)
                for name, service in services.items()
                if isinstance(service, dict)
                and "opentelemetry-collector" in str(service.get("image", ""))
            ),
            None,
        )
        if collector is None:
            self.add(
                WARNING,
                path,
                "services",
                "no service runs the otelcol-contrib image",
                f"add one with image otel/opentelemetry-collector-contrib:"
                f"{self.facts.pinned_version or 'X.Y.Z'}",
            )
            return
        name, service = collector
        where = f"services.{name}"
        mounts = _compose_mounts(service.get("volumes"), path.parent)
        configs = _config_arguments(service.get("command"))
        if not configs:
            self.add(
                ERROR,
                path,
                f"{where}.command",
                "the collector is started without `--config`, so it runs the "
                "image's built-in config",
                "pass `--config=/etc/otelcol-contrib/config.yaml` and mount the root "
                "config there",
            )
        config_mounted = False
        for config in configs:
            mounted = mounts.get(config)
            if mounted is None:
                self.add(
                    ERROR,
                    path,
                    f"{where}.volumes",
                    f"`--config={config}` but nothing is mounted at {config}",
                    "mount the file there (read-only)",
                )
            elif mounted.resolve() == self.facts.config_path.resolve():
                config_mounted = True
        if configs and not config_mounted:
            self.add(
                ERROR,
                path,
                f"{where}.volumes",
                f"none of the --config files is {self.facts.config_path.name}",
                f"mount ../{self.facts.config_path.name} and pass it with --config",
            )
        for directory in self.facts.queue_dirs:
            if directory.rstrip("/") not in mounts:
                self.add(
                    ERROR,
                    path,
                    f"{where}.volumes",
                    f"the persistent queue directory {directory} is not a volume: "
                    "the queue would be lost with the container",
                    f"mount a named volume at {directory}",
                )
        if service.get("network_mode") != "host":
            published = _compose_ports(service.get("ports"))
            for port, source in sorted(self.facts.receiver_ports.items()):
                if port not in published:
                    self.add(
                        WARNING,
                        path,
                        f"{where}.ports",
                        f"port {port} ({source}) is not published",
                        f"publish it, e.g. `127.0.0.1:{port}:{port}`",
                    )

    # -- Kubernetes -----------------------------------------------------------

    def _check_kubernetes(self) -> None:
        folder = self.folder / "k8s"
        if not folder.is_dir():
            return
        resources: list[tuple[Path, dict[str, Any]]] = []
        kustomization: tuple[Path, dict[str, Any]] | None = None
        for path in sorted(folder.glob("*.y*ml")):
            document, findings = _read_yaml(path, self._display(path), multi=True)
            self.findings += findings
            if document is None:
                continue
            for item in document.data or ():
                if not isinstance(item, dict):
                    continue
                if item.get("kind") == "Kustomization" or path.stem == "kustomization":
                    kustomization = (path, item)
                else:
                    resources.append((path, item))

        generated_env: set[str] = set()
        config_maps: dict[str, set[str]] = {}
        if kustomization is None:
            self.add(
                WARNING,
                folder,
                "kustomization.yaml",
                "no kustomization generating the ConfigMap from the root config",
                "add a configMapGenerator whose `files` entry is the root config",
            )
        else:
            config_maps, generated_env = self._check_kustomization(*kustomization)

        workloads = [
            (path, item)
            for path, item in resources
            if item.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")
        ]
        services = [
            (path, item) for path, item in resources if item.get("kind") == "Service"
        ]
        if not workloads:
            self.add(
                WARNING,
                folder,
                "Deployment",
                "no Deployment runs the collector",
                "add a Deployment with the otelcol-contrib image",
            )
        for path, workload in workloads:
            self._check_workload(path, workload, config_maps, generated_env)
        # What reaches the container is the targetPort (a number, or a name of
        # a container port), which defaults to the port.
        named: dict[str, int] = {}
        for _, workload in workloads:
            pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
            for container in pod.get("containers") or []:
                for port in (container or {}).get("ports") or []:
                    if (
                        isinstance(port, dict)
                        and port.get("name")
                        and isinstance(port.get("containerPort"), int)
                    ):
                        named[str(port["name"])] = port["containerPort"]
        service_ports: set[int] = set()
        for _, service in services:
            for port in (service.get("spec") or {}).get("ports") or []:
                if not isinstance(port, dict):
                    continue
                target = port.get("targetPort", port.get("port"))
                if isinstance(target, str):
                    target = named.get(target)
                if isinstance(target, int):
                    service_ports.add(target)
        for port, source in sorted(self.facts.receiver_ports.items()):
            if port not in service_ports:
                self.add(
                    ERROR,
                    services[0][0] if services else folder,
                    "Service.spec.ports",
                    f"no Service port reaches {port} ({source})",
                    f"add a port {port} to the Service",
                )

    def _check_kustomization(
        self, path: Path, kustomization: dict[str, Any]
    ) -> tuple[dict[str, set[str]], set[str]]:
        config_maps: dict[str, set[str]] = {}
        generated_env: set[str] = set()
        found_config = False
        for generator in kustomization.get("configMapGenerator") or []:
            if not isinstance(generator, dict):
                continue
            keys: set[str] = set()
            for entry in generator.get("files") or []:
                key, _, source = str(entry).rpartition("=")
                source_path = (path.parent / source).resolve()
                keys.add(key or Path(source).name)
                if source_path == self.facts.config_path.resolve():
                    found_config = True
            for entry in generator.get("envs") or []:
                env_path = path.parent / str(entry)
                if env_path.is_file():
                    names = set(_read_env_file(env_path))
                    keys |= names
                    generated_env |= names
            for literal in generator.get("literals") or []:
                name = str(literal).split("=", 1)[0]
                keys.add(name)
            config_maps[str(generator.get("name", ""))] = keys
        if not found_config:
            self.add(
                ERROR,
                path,
                "configMapGenerator",
                f"no ConfigMap is generated from the root config "
                f"({self.facts.config_path.name})",
                "add `files: [config.yaml=../../otel-collector.yaml]` and build with "
                "`--load-restrictor LoadRestrictionsNone`",
            )
        return config_maps, generated_env

    def _check_workload(
        self,
        path: Path,
        workload: dict[str, Any],
        config_maps: dict[str, set[str]],
        generated_env: set[str],
    ) -> None:
        kind = workload.get("kind", "Deployment")
        pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = [c for c in pod.get("containers") or [] if isinstance(c, dict)]
        container = next(
            (
                c
                for c in containers
                if "opentelemetry-collector" in str(c.get("image", ""))
            ),
            None,
        )
        if container is None:
            self.add(
                WARNING,
                path,
                f"{kind}.spec.template.spec.containers",
                "no container runs the otelcol-contrib image",
                "use image otel/opentelemetry-collector-contrib at the pinned version",
            )
            return
        where = f"{kind}.containers[{container.get('name', '?')}]"
        volumes = {
            str(volume.get("name")): volume
            for volume in pod.get("volumes") or []
            if isinstance(volume, dict)
        }
        mounts = {
            str(mount.get("mountPath", "")).rstrip("/"): mount
            for mount in container.get("volumeMounts") or []
            if isinstance(mount, dict)
        }

        # The config file: --config points into a mounted ConfigMap holding it.
        configs = _config_arguments(container.get("args") or container.get("command"))
        if not configs:
            self.add(
                ERROR,
                path,
                f"{where}.args",
                "the collector is started without `--config`",
                "pass `--config=/conf/config.yaml` and mount the generated ConfigMap",
            )
        for config in configs:
            directory, _, filename = config.rpartition("/")
            mount = mounts.get(directory)
            volume = volumes.get(str(mount.get("name"))) if mount else None
            config_map = (volume or {}).get("configMap") or {}
            keys = config_maps.get(str(config_map.get("name")), set())
            if mount is None or not config_map:
                self.add(
                    ERROR,
                    path,
                    f"{where}.volumeMounts",
                    f"`--config={config}` but no ConfigMap volume is mounted at "
                    f"{directory}",
                    "mount the generated ConfigMap there",
                )
            elif filename not in keys:
                self.add(
                    ERROR,
                    path,
                    f"{where}.args",
                    f"`--config={config}` but the ConfigMap "
                    f"`{config_map.get('name')}` has no key `{filename}`",
                    f"generate the key `{filename}` from the root config",
                )

        # Ports and probes.
        ports = {
            int(port["containerPort"]): str(port.get("name", ""))
            for port in container.get("ports") or []
            if isinstance(port, dict) and isinstance(port.get("containerPort"), int)
        }
        names = {name: number for number, name in ports.items() if name}
        expected = dict(self.facts.receiver_ports)
        if self.facts.health_port is not None:
            expected[self.facts.health_port] = "health_check"
        for port, source in sorted(expected.items()):
            if port not in ports:
                self.add(
                    WARNING,
                    path,
                    f"{where}.ports",
                    f"containerPort {port} ({source}) is not declared",
                    f"add `- containerPort: {port}`",
                )
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if probe_name != "startupProbe" and not isinstance(probe, dict):
                self.add(
                    ERROR,
                    path,
                    f"{where}.{probe_name}",
                    f"no {probe_name}",
                    f"probe the health_check extension: httpGet "
                    f"{self.facts.health_path} on port {self.facts.health_port}",
                )
                continue
            http = (probe or {}).get("httpGet") if isinstance(probe, dict) else None
            if not isinstance(http, dict):
                continue
            probe_port = http.get("port")
            number = (
                names.get(probe_port) if isinstance(probe_port, str) else probe_port
            )
            if number != self.facts.health_port:
                self.add(
                    ERROR,
                    path,
                    f"{where}.{probe_name}.httpGet.port",
                    f"probes port {probe_port}, but health_check listens on "
                    f"{self.facts.health_port}",
                    f"probe port {self.facts.health_port}",
                )
            if str(http.get("path", "/")) != self.facts.health_path:
                self.add(
                    ERROR,
                    path,
                    f"{where}.{probe_name}.httpGet.path",
                    f"probes {http.get('path')}, but health_check serves "
                    f"{self.facts.health_path}",
                    f"probe path {self.facts.health_path}",
                )

        # Queue and TLS folders are volumes.
        for directory in self.facts.queue_dirs:
            if directory.rstrip("/") not in mounts:
                self.add(
                    ERROR,
                    path,
                    f"{where}.volumeMounts",
                    f"the persistent queue directory {directory} is not a volume: "
                    "the queue would be lost with the pod",
                    f"mount a PersistentVolumeClaim at {directory}",
                )
        for directory in self.facts.tls_dirs:
            if directory.rstrip("/") not in mounts:
                self.add(
                    ERROR,
                    path,
                    f"{where}.volumeMounts",
                    f"the TLS certificate folder {directory} is not mounted",
                    f"mount the TLS Secret at {directory}",
                )

        # Variables and memory.
        provided: set[str] = set(generated_env)
        env = {
            str(item.get("name")): item
            for item in container.get("env") or []
            if isinstance(item, dict)
        }
        provided |= set(env)
        for source in container.get("envFrom") or []:
            if isinstance(source, dict) and isinstance(
                source.get("configMapRef"), dict
            ):
                provided |= config_maps.get(
                    str(source["configMapRef"].get("name")), set()
                )
        for name, default in sorted(self.facts.env_defaults.items()):
            if default is None and name not in provided:
                self.add(
                    ERROR,
                    path,
                    f"{where}.env",
                    f"the config reads ${{env:{name}}} (no default) but the "
                    f"{kind} does not set it",
                    f"add `{name}` to env (from a Secret when it is a credential)",
                )
        for name, item in env.items():
            if _SECRET_NAME.search(name) and "value" in item:
                self.add(
                    ERROR,
                    path,
                    f"{where}.env.{name}",
                    f"`{name}` is written as a literal value in the manifest",
                    "use `valueFrom.secretKeyRef`",
                )
        limit = _memory_bytes(
            ((container.get("resources") or {}).get("limits") or {}).get("memory")
        )
        gomemlimit = env.get("GOMEMLIMIT", {}).get("value")
        if limit is None:
            self.add(
                WARNING,
                path,
                f"{where}.resources.limits.memory",
                "no memory limit: memory_limiter's percentages have nothing to "
                "refer to",
                "set resources.limits.memory",
            )
        elif gomemlimit is None:
            self.add(
                WARNING,
                path,
                f"{where}.env.GOMEMLIMIT",
                "GOMEMLIMIT is not set: the Go runtime does not know the limit and "
                "collects garbage late",
                "set GOMEMLIMIT to about 80% of the memory limit, e.g. `1600MiB` for "
                "`2Gi`",
            )
        else:
            soft = _memory_bytes(str(gomemlimit))
            if soft is None or soft >= limit:
                self.add(
                    ERROR,
                    path,
                    f"{where}.env.GOMEMLIMIT",
                    f"GOMEMLIMIT {gomemlimit} is not below the memory limit",
                    "set it to about 80% of resources.limits.memory",
                )

    # -- systemd --------------------------------------------------------------

    def _check_systemd(self) -> None:
        folder = self.folder / "systemd"
        if not folder.is_dir():
            return
        units = sorted(folder.glob("*.service"))
        if not units:
            return
        unit_path = units[0]
        unit = _read_unit(unit_path)
        exec_start = " ".join(value for value, _ in unit.get("ExecStart", []))
        if "--config" not in exec_start:
            self.add(
                ERROR,
                unit_path,
                "Service.ExecStart",
                "the collector is started without `--config`",
                "pass --config=/etc/otelcol-contrib/config.yaml (the root config, "
                "installed there)",
            )
        provided: set[str] = set()
        for value, _ in unit.get("Environment", []):
            for assignment in value.split():
                provided.add(assignment.strip('"').split("=", 1)[0])
        env_files = [value.lstrip("-") for value, _ in unit.get("EnvironmentFile", [])]
        shipped = sorted(folder.glob("*.env"))
        for env_file in env_files:
            local = folder / Path(env_file).name
            if local.is_file():
                provided |= set(_read_env_file(local))
            else:
                self.add(
                    WARNING,
                    unit_path,
                    "Service.EnvironmentFile",
                    f"{env_file} has no example next to the unit",
                    f"ship {Path(env_file).name} in {folder.name}/",
                )
        if not env_files and shipped:
            self.add(
                WARNING,
                unit_path,
                "Service.EnvironmentFile",
                f"{shipped[0].name} is shipped but the unit does not read it",
                f"add `EnvironmentFile=/etc/otelcol-contrib/{shipped[0].name}`",
            )
        for name, default in sorted(self.facts.env_defaults.items()):
            if default is None and name not in provided:
                self.add(
                    ERROR,
                    unit_path,
                    "Service.EnvironmentFile",
                    f"the config reads ${{env:{name}}} (no default) but neither the "
                    "unit nor its environment file sets it",
                    f"add `{name}=` to the environment file",
                )
        writable = {
            "/var/lib/" + value.strip("/")
            for values in unit.get("StateDirectory", [])
            for value in values[0].split()
        } | {
            value.lstrip("-")
            for values in unit.get("ReadWritePaths", [])
            for value in values[0].split()
        }
        for directory in self.facts.queue_dirs:
            if directory.rstrip("/") not in {item.rstrip("/") for item in writable}:
                self.add(
                    ERROR,
                    unit_path,
                    "Service.StateDirectory",
                    f"the persistent queue directory {directory} is not a state "
                    "directory of the unit",
                    f"set `StateDirectory={directory.removeprefix('/var/lib/')}`",
                )
        if "GOMEMLIMIT" not in provided:
            self.add(
                WARNING,
                unit_path,
                "Service.Environment",
                "GOMEMLIMIT is not set",
                "set it below MemoryMax, e.g. `Environment=GOMEMLIMIT=1600MiB` with "
                "`MemoryMax=2G`",
            )
        if "MemoryMax" not in unit:
            self.add(
                WARNING,
                unit_path,
                "Service.MemoryMax",
                "no MemoryMax: memory_limiter's percentages refer to the whole host",
                "set `MemoryMax=` for the unit",
            )


def _compose_mounts(volumes: Any, base: Path) -> dict[str, Path]:
    """Compose mounts: container path -> host path (`volume:NAME` for volumes)."""
    mounts: dict[str, Path] = {}
    for volume in volumes or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) < 2:
                continue
            source, target = parts[0], parts[1]
        elif isinstance(volume, dict):
            source, target = (
                str(volume.get("source", "")),
                str(volume.get("target", "")),
            )
        else:
            continue
        is_path = source.startswith((".", "/", "~"))
        mounts[target.rstrip("/")] = (
            (base / source) if is_path else Path("volume:" + source)
        )
    return mounts


def _compose_ports(ports: Any) -> set[int]:
    published: set[int] = set()
    for port in ports or []:
        if isinstance(port, dict) and isinstance(port.get("target"), int):
            published.add(port["target"])
        elif isinstance(port, (str, int)):
            target = str(port).split(":")[-1].split("/")[0]
            if target.isdigit():
                published.add(int(target))
    return published


def _config_arguments(command: Any) -> list[str]:
    if isinstance(command, str):
        command = command.split()
    if not isinstance(command, list):
        return []
    configs: list[str] = []
    words = [str(word) for word in command]
    for index, word in enumerate(words):
        if word.startswith("--config="):
            configs.append(word.split("=", 1)[1])
        elif word == "--config" and index + 1 < len(words):
            configs.append(words[index + 1])
    return [
        config for config in configs if "://" not in config and ":" not in config[:6]
    ]


def _read_env_file(path: Path) -> dict[str, tuple[str, int]]:
    """KEY=VALUE lines (comments and blanks skipped): name -> (value, line)."""
    entries: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), start=1
    ):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, value = stripped.removeprefix("export ").partition("=")
        entries[name.strip()] = (value.strip().strip('"').strip("'"), number)
    return entries


def _read_unit(path: Path) -> dict[str, list[tuple[str, int]]]:
    """The [Service] section of a systemd unit: key -> [(value, line), ...]."""
    section = ""
    entries: dict[str, list[tuple[str, int]]] = {}
    for number, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), start=1
    ):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        if section != "Service" or not stripped or stripped.startswith(("#", ";")):
            continue
        key, _, value = stripped.partition("=")
        entries.setdefault(key.strip(), []).append((value.strip(), number))
    return entries


def _memory_bytes(text: Any) -> int | None:
    """Bytes in a Kubernetes quantity (`2Gi`) or a GOMEMLIMIT value (`1600MiB`)."""
    if isinstance(text, int):
        return text
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", text)
    if match is None:
        return None
    number = float(match.group(1))
    unit = (match.group(2) or "").rstrip("B")
    powers = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
    base = 1024 if unit.endswith("i") else 1000
    return int(number * base ** powers[unit.rstrip("i")])


# -- public entry points ------------------------------------------------------


def check_config(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    schema_dir: str | os.PathLike[str] | None = None,
    *,
    deployment_dir: str | os.PathLike[str] | None = None,
    check_deployment: bool = True,
    collector_version: str | None = None,
) -> list[Finding]:
    """Check a collector config file (or several, merged in order).

    `schema_dir` overrides where the component schemas are looked for (see
    `find_schema_dir`); without schemas the other checks still run and a note
    says so. The deployment folder (`deployment_dir`, else `collector/` next
    to the first file) is compared with the config when `check_deployment` is
    true, and a `otel-collector.dev.yaml` overlay there is checked merged with
    the config. `collector_version` overrides the version pinned in the
    file's header. Raises OSError when a file cannot be read.
    """
    paths = (
        [Path(path)]
        if isinstance(path, (str, os.PathLike))
        else [Path(p) for p in path]
    )
    if not paths:
        raise ValueError("check_config needs at least one config file")
    for config_path in paths:
        if not config_path.is_file():
            raise FileNotFoundError(f"no collector config at {config_path}")

    found, looked_in = find_schema_dir(paths[0], schema_dir)
    findings: list[Finding] = []
    schemas = None
    if found is not None:
        schemas = _Schemas(found)
    else:
        findings.append(
            _schema_missing_note(looked_in, explicit=schema_dir is not None)
        )

    # Paths are shown relative to the current directory, as a shell user typed them.
    display_root = Path.cwd().resolve()
    try:
        findings += _check_files(paths, schemas, collector_version, display_root)
    except _ConfigFileError as exc:
        raise OSError(str(exc)) from exc

    folder = Path(deployment_dir) if deployment_dir else paths[0].parent / "collector"
    if check_deployment and len(paths) == 1 and folder.is_dir():
        findings += _check_deployment(
            paths[0], folder, schemas, collector_version, display_root
        )

    return sorted(
        _deduplicate(findings),
        key=lambda finding: (finding.file, finding.line or 0),
    )


def _schema_missing_note(looked_in: list[Path], *, explicit: bool) -> Finding:
    shown = ", ".join(str(path) for path in looked_in[:6])
    if len(looked_in) > 6:
        shown += f" and {len(looked_in) - 6} more parent folders"
    return Finding(
        WARNING if explicit else INFO,
        "(schema)",
        f"no collector-schema folder (components.yaml) found; looked in {shown}. "
        "Keys were not checked against the component schemas; the other checks ran",
        f"pass --schema-dir DIR or set {SCHEMA_DIR_ENV}=DIR",
    )


def _check_files(
    paths: list[Path],
    schemas: _Schemas | None,
    collector_version: str | None,
    display_root: Path,
) -> list[Finding]:
    findings: list[Finding] = []
    documents: list[_Document] = []
    for config_path in paths:
        display = _display_path(config_path, display_root)
        document, problems = _read_yaml(config_path, display)
        findings += problems
        if document is None:
            return findings
        if document.data is not None and not isinstance(document.data, dict):
            findings.append(
                Finding(
                    ERROR,
                    "(top level)",
                    f"the file holds {_describe(document.data)}, not a mapping of "
                    "sections",
                    "start with `receivers:`, `processors:`, `exporters:` and "
                    "`service:`",
                    display,
                    1,
                )
            )
            return findings
        documents.append(document)

    merged: Any = {}
    for document in documents:
        merged = _merge(merged, document.data or {})
    pinned = collector_version or _pinned_version(documents[0])
    checker = _Checker(documents, merged, schemas, pinned)
    return findings + checker.run()


def _check_deployment(
    config_path: Path,
    folder: Path,
    schemas: _Schemas | None,
    collector_version: str | None,
    display_root: Path,
) -> list[Finding]:
    findings: list[Finding] = []
    document, problems = _read_yaml(
        config_path, _display_path(config_path, display_root)
    )
    if document is None or not isinstance(document.data, dict):
        return problems
    pinned = collector_version or _pinned_version(document)
    data = document.data
    facts = _collect_facts(config_path, data, pinned)
    for overlay in sorted(folder.glob("otel-collector.*.yaml")):
        # An overlay is only meaningful merged with the config it extends.
        shown = _display_path(overlay, display_root)
        merged = _check_files(
            [config_path, overlay], schemas, collector_version, display_root
        )
        for finding in merged:
            if finding.file == shown:
                findings.append(finding)
            elif finding.fails:
                findings.append(
                    replace(finding, message=f"{finding.message} (merged with {shown})")
                )
        overlay_document, _ = _read_yaml(overlay, shown)
        if overlay_document is not None:
            # Variables the overlay reads must be documented and set as well.
            for _, value in _walk_strings(overlay_document.data):
                for reference in _references(value):
                    if reference.scheme == "env":
                        facts.env_defaults.setdefault(reference.name, reference.default)

    findings += _DeploymentChecker(folder, facts, display_root).run()
    return findings


def _display_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _deduplicate(findings: list[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    unique = []
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            unique.append(finding)
    return unique


# -- command line -------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `showmax-otel check-collector-config` to `parser`."""
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help=f"collector config file(s), merged in order like repeated --config "
        f"(default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--schema-dir",
        metavar="DIR",
        help=f"folder holding components.yaml and the component schemas (default: "
        f"${SCHEMA_DIR_ENV}, else shared/collector-schema found by walking up from "
        "the config file and from the current directory)",
    )
    parser.add_argument(
        "--deployment-dir",
        metavar="DIR",
        help="deployment folder to compare with the config (default: collector/ "
        "next to the config file)",
    )
    parser.add_argument(
        "--no-deployment",
        action="store_true",
        help="do not compare the deployment folder with the config",
    )
    parser.add_argument(
        "--collector-version",
        metavar="X.Y.Z",
        help="otelcol-contrib version to check against (default: the one pinned in "
        "the config's header comment)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people, json (one object per finding) for tools",
    )


def run(args: argparse.Namespace) -> int:
    """Run the check; 0 when clean, 1 with findings, 2 on a usage or file error."""
    files = list(getattr(args, "files", None) or []) or [DEFAULT_CONFIG]
    output_format = getattr(args, "format", "text")
    schema_dir = getattr(args, "schema_dir", None)
    if schema_dir and not (Path(schema_dir) / "components.yaml").is_file():
        print(
            f"check-collector-config: --schema-dir {schema_dir} holds no "
            "components.yaml; point it at the collector-schema folder",
            file=sys.stderr,
        )
        return 2
    try:
        findings = check_config(
            files,
            schema_dir,
            deployment_dir=getattr(args, "deployment_dir", None),
            check_deployment=not getattr(args, "no_deployment", False),
            collector_version=getattr(args, "collector_version", None),
        )
    except OSError as exc:
        print(f"check-collector-config: {exc}", file=sys.stderr)
        if not Path(files[0]).exists() and files == [DEFAULT_CONFIG]:
            print(
                "  run it from the repository root, or pass the config file",
                file=sys.stderr,
            )
        return 2

    failing = [finding for finding in findings if finding.fails]
    if output_format == "json":
        for finding in findings:
            print(json.dumps(asdict(finding), sort_keys=True))
    else:
        for finding in findings:
            print(finding.format())
        counts = {
            severity: sum(1 for f in findings if f.severity == severity)
            for severity in (ERROR, WARNING, INFO)
        }
        print(
            f"{' + '.join(files)}: {counts[ERROR]} errors, {counts[WARNING]} warnings, "
            f"{counts[INFO]} notes"
        )

    return 1 if failing else 0


def main(argv: list[str] | None = None) -> int:
    """Run the check alone: `python -m showmax_otel.collector_config FILE`."""
    parser = argparse.ArgumentParser(
        prog="showmax-otel check-collector-config",
        description="Check an OpenTelemetry Collector config offline.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
