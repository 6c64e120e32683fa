"""Options are declared once; the README table is made from the declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from showmax_otel.options import (
    ConfigurationWarning,
    describe_options,
    load_settings,
    options_table_markdown,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_table_matches_the_declarations() -> None:
    """README.md holds the option table generated from options.py."""
    text = README.read_text()
    start = text.index("<!-- options-table:start -->") + len(
        "<!-- options-table:start -->"
    )
    end = text.index("<!-- options-table:end -->")

    assert text[start:end].strip() == options_table_markdown().strip()


def test_every_option_has_a_doc_and_standard_ones_their_otel_variable() -> None:
    """Each option documents itself; the OTEL_* ones name their variable."""
    rows = {row["name"]: row for row in describe_options()}

    assert all(row["doc"] for row in rows.values())
    assert rows["endpoint"]["env"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert rows["bsp_max_queue_size"]["env"] == "OTEL_BSP_MAX_QUEUE_SIZE"
    assert rows["shutdown_timeout_seconds"]["env"].startswith("SHOWMAX_OTEL_")


@pytest.mark.parametrize(
    ("env", "option", "expected"),
    [
        pytest.param(
            {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,x=1"},
            "headers",
            {"api-key": "a b", "x": "1"},
            id="headers-url-decoded",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"},
            "timeout_seconds",
            2.5,
            id="timeout-env-in-milliseconds",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "GRPC"},
            "protocol",
            "grpc",
            id="protocol-case-insensitive",
        ),
        pytest.param(
            {"OTEL_SDK_DISABLED": "true"}, "sdk_disabled", True, id="sdk-disabled"
        ),
        pytest.param(
            {"SHOWMAX_OTEL_BRIDGE_LOGGERS": "a, b"},
            "bridge_loggers",
            ("a", "b"),
            id="names-list",
        ),
        pytest.param(
            {"SHOWMAX_OTEL_LOG_LEVEL": "warning"}, "log_level", 30, id="level-name"
        ),
    ],
)
def test_environment_values_are_parsed_as_the_specification_says(
    env: dict[str, str], option: str, expected: object
) -> None:
    """Each environment variable is parsed into its option's type."""
    assert getattr(load_settings({}, env), option) == expected


def test_a_keyword_wins_over_the_environment() -> None:
    """init_telemetry(option=...) takes precedence over the variable."""
    settings = load_settings({"service_name": "kw"}, {"OTEL_SERVICE_NAME": "env"})

    assert settings.service_name == "kw"


def test_a_secret_environment_value_is_never_echoed() -> None:
    """A malformed headers variable warns without printing its value."""
    with pytest.warns(ConfigurationWarning) as caught:
        load_settings({}, {"OTEL_EXPORTER_OTLP_HEADERS": "Bearer sekrit"})

    assert "sekrit" not in str(caught[0].message)
    assert "item 1" in str(caught[0].message)


def test_one_bad_header_item_keeps_the_others() -> None:
    """A malformed item of OTEL_EXPORTER_OTLP_HEADERS is skipped, not all of them."""
    with pytest.warns(ConfigurationWarning, match="item 2"):
        settings = load_settings(
            {}, {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,broken"}
        )

    assert settings.headers == {"Authorization": "Bearer abc"}


def test_repr_of_settings_hides_secrets_and_endpoint_credentials() -> None:
    """repr(settings) shows no header value, endpoint password or query."""
    settings = load_settings(
        {
            "endpoint": "https://user:pw-secret@collector:4318/?token=tok-secret",
            "headers": {"Authorization": "Bearer header-secret"},
        }
    )

    text = repr(settings)
    assert "collector:4318" in text
    for secret in ("pw-secret", "tok-secret", "header-secret"):
        assert secret not in text
