"""Export configuration from the environment, as the OTLP specification says.

Every case runs against the real receiver and looks at what arrived: the
exact path, the headers and whether the request came over TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from showmax_otel import Telemetry, init_telemetry
from showmax_otel._exporters import configuration_problems, plan_export
from showmax_otel.options import ConfigurationWarning, load_settings
from showmax_otel.testing import OTLPReceiver, ReceiverTLS

_WAIT_SECONDS = 15.0


# -- helpers -------------------------------------------------------------------


def _make_certificates(directory: Path) -> dict[str, str]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def sign(subject: str, key: Any, issuer_key: Any, role: str) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("showmax-otel test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.BasicConstraints(ca=role == "ca", path_length=None),
                critical=True,
            )
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        elif role == "client":
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def write(file_name: str, data: bytes) -> str:
        path = directory / file_name
        path.write_bytes(data)
        return str(path)

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca": write(
            "ca.pem",
            sign("showmax-otel test CA", ca_key, ca_key, "ca").public_bytes(pem),
        )
    }
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = sign(f"test {role}", key, ca_key, role)
        files[f"{role}_cert"] = write(f"{role}.pem", certificate.public_bytes(pem))
        files[f"{role}_key"] = write(
            f"{role}.key",
            key.private_bytes(
                pem,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    return files


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_receiver(certificates: dict[str, str]) -> Iterator[OTLPReceiver]:
    """A receiver that speaks only TLS, with the test CA's server certificate."""
    tls = ReceiverTLS(certificates["server_cert"], certificates["server_key"])
    with OTLPReceiver(tls=tls) as running:
        yield running


@pytest.fixture
def mtls_receiver(certificates: dict[str, str]) -> Iterator[OTLPReceiver]:
    """A receiver that also demands a client certificate signed by the test CA."""
    tls = ReceiverTLS(
        certificates["server_cert"], certificates["server_key"], certificates["ca"]
    )
    with OTLPReceiver(tls=tls) as running:
        yield running


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _host_port(url: str) -> str:
    return url.split("://", 1)[1]


def _init(**options: Any) -> tuple[Telemetry, list[str]]:
    """init_telemetry(), returning the configuration warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        telemetry = init_telemetry(**options)
    messages = [
        str(w.message) for w in caught if issubclass(w.category, ConfigurationWarning)
    ]
    others = [w for w in caught if not issubclass(w.category, ConfigurationWarning)]
    assert not others, [str(w.message) for w in others]

    return telemetry, messages


def _emit_and_flush(telemetry: Telemetry) -> bool:
    logging.getLogger("tests.exporters").warning("a record for the receiver")
    with trace.get_tracer(__name__).start_as_current_span("a span for the receiver"):
        pass

    return telemetry.force_flush(_WAIT_SECONDS)


def _both_arrived(receiver: OTLPReceiver) -> bool:
    return receiver.wait_for(
        lambda r: {q.signal for q in r.requests()} >= {"logs", "traces"},
        _WAIT_SECONDS,
    )


def _by_signal(receiver: OTLPReceiver) -> dict[str, Any]:
    return {request.signal: request for request in receiver.requests()}


# -- endpoints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint_form", "expected_warnings"),
    [
        pytest.param("{url}", 0, id="generic-http-url"),
        pytest.param("{url}/", 0, id="generic-with-trailing-slash"),
        pytest.param("{host_port}", 1, id="generic-without-scheme-is-fixed-and-warned"),
    ],
)
def test_http_generic_endpoint_gets_signal_paths_appended(
    receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    endpoint_form: str,
    expected_warnings: int,
) -> None:
    """The generic HTTP endpoint gets /v1/traces and /v1/logs appended."""
    endpoint = endpoint_form.format(
        url=receiver.http_endpoint, host_port=_host_port(receiver.http_endpoint)
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)

    telemetry, messages = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    requests = _by_signal(receiver)
    assert requests["traces"].path == "/v1/traces"
    assert requests["logs"].path == "/v1/logs"
    assert not requests["logs"].tls
    assert len(messages) == expected_warnings
    if expected_warnings:
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in messages[0]
        assert "http://" in messages[0]


def test_http_per_signal_endpoints_are_used_verbatim(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-signal endpoints are used as given, query string included."""
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}"
    )
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.http_endpoint + "/v1/traces?t=1"
    )
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", receiver.http_endpoint + "/v1/logs?l=2"
    )

    telemetry, messages = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    requests = _by_signal(receiver)
    assert requests["traces"].path == "/v1/traces?t=1"
    assert requests["logs"].path == "/v1/logs?l=2"
    assert messages == []


@pytest.mark.parametrize(
    ("form", "insecure", "use_tls_receiver"),
    [
        pytest.param("http://{host_port}", None, False, id="http-scheme-plaintext"),
        pytest.param("{host_port}", "true", False, id="no-scheme-insecure-true"),
        pytest.param("https://{host_port}", None, True, id="https-scheme-tls"),
        pytest.param("{host_port}", None, True, id="no-scheme-is-tls-by-default"),
        pytest.param("{host_port}", "false", True, id="no-scheme-insecure-false"),
    ],
)
def test_grpc_endpoint_scheme_and_insecure_decide_tls(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    certificates: dict[str, str],
    form: str,
    insecure: str | None,
    use_tls_receiver: bool,
) -> None:
    """For gRPC, https:// or no scheme means TLS unless insecure is true."""
    receiver = request.getfixturevalue(
        "tls_receiver" if use_tls_receiver else "receiver"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        form.format(host_port=_host_port(receiver.grpc_endpoint)),
    )
    if insecure is not None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", insecure)
    if use_tls_receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certificates["ca"])

    telemetry, messages = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    assert {r.tls for r in receiver.requests()} == {use_tls_receiver}
    assert messages == []


# -- TLS -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize(
    "mutual", [False, True], ids=["ca-file", "client-cert-and-key"]
)
def test_tls_with_ca_file_and_client_certificate(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    certificates: dict[str, str],
    protocol: str,
    mutual: bool,
) -> None:
    """TLS works with a CA file, and mutual TLS with a client certificate and key."""
    receiver = request.getfixturevalue("mtls_receiver" if mutual else "tls_receiver")
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certificates["ca"])
    # Images often point requests at the system bundle; the CA file must win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/system-bundle.pem")
    if mutual:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certificates["client_cert"]
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", certificates["client_key"])

    telemetry, messages = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    assert all(r.tls for r in receiver.requests())
    assert messages == []


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_mutual_tls_without_client_certificate_is_refused_and_counted(
    mtls_receiver: OTLPReceiver,
    certificates: dict[str, str],
    protocol: str,
) -> None:
    """A receiver demanding a client certificate gets nothing; the loss is counted."""
    endpoint = (
        mtls_receiver.grpc_endpoint
        if protocol == "grpc"
        else mtls_receiver.http_endpoint
    )
    telemetry, _ = _init(
        endpoint=endpoint,
        protocol=protocol,
        certificate_file=certificates["ca"],
        timeout_seconds=1.0,
        traces_exporter="none",
    )

    logging.getLogger("tests.exporters").warning("never arrives")
    assert not telemetry.force_flush(_WAIT_SECONDS)

    assert mtls_receiver.requests() == []
    stats = telemetry.stats()["logs"]
    assert stats["dropped"] == {"export_failed": 1}
    assert stats["export_failures"] >= 1


def test_unreadable_ca_file_warns_at_init_and_counts_every_loss(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """A CA file that cannot be read: one warning, then failed exports, counted."""
    missing = str(tmp_path / "missing-ca.pem")
    telemetry, messages = _init(
        endpoint=receiver.http_endpoint.replace("http://", "https://"),
        certificate_file=missing,
        traces_exporter="none",
    )

    logging.getLogger("tests.exporters").warning("never arrives")
    assert not telemetry.force_flush(_WAIT_SECONDS)

    assert len(messages) == 1
    assert missing in messages[0]
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" in messages[0]
    assert telemetry.stats()["logs"]["dropped"] == {"export_failed": 1}
    assert receiver.requests() == []


# -- headers, timeouts, compression -------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_headers_plain_url_encoded_generic_and_per_signal(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """Generic headers go with spans, per-signal ones replace them for logs."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", "X-Plain=plain-value,X-Encoded=a%20b%3Dc%2Cd"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "X-Logs-Only=for%20logs")

    telemetry, messages = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    requests = _by_signal(receiver)
    traces_headers = requests["traces"].headers
    logs_headers = requests["logs"].headers
    assert traces_headers["x-plain"] == "plain-value"
    assert traces_headers["x-encoded"] == "a b=c,d"
    assert "x-logs-only" not in traces_headers
    assert logs_headers["x-logs-only"] == "for logs"
    assert "x-plain" not in logs_headers
    assert messages == []


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_timeout_from_environment_bounds_an_unanswered_export(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT (ms) ends an export the collector never answers."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    receiver.hold_responses(True)

    telemetry, _ = _init()
    logging.getLogger("tests.exporters").warning("held by the collector")
    # With the default 10 s timeout the export would still be in flight when
    # this flush gives up; with 300 ms it has failed and been counted.
    flushed = telemetry.force_flush(6.0)
    receiver.hold_responses(False)

    stats = telemetry.stats()["logs"]
    assert not flushed
    assert stats["queued"] == 0
    assert stats["dropped"] == {"export_failed": 1}


def test_gzip_compression_from_environment(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip compresses HTTP exports."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")

    telemetry, _ = _init()
    assert _emit_and_flush(telemetry)
    assert _both_arrived(receiver)

    assert {r.headers.get("content-encoding") for r in receiver.requests()} == {"gzip"}
    assert len(receiver.logs()) == 1


def test_gzip_compression_reaches_the_grpc_exporter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip sets gRPC's compression."""
    import grpc

    from showmax_otel._exporters import build_exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    sender = build_exporter(load_settings({}), "logs")
    try:
        assert sender.exporter._compression == grpc.Compression.Gzip
    finally:
        sender.shutdown()


# -- contradictory and invalid settings ---------------------------------------


_SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "no http:// or https://"],
            id="http-endpoint-without-scheme",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:4318"},
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "'ftp'"],
            id="unknown-scheme",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:99999"},
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "not a valid URL"],
            id="port-out-of-range",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/v1/traces"},
            ["already ends in /v1/traces", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"],
            id="generic-endpoint-with-signal-path",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
            ["port 4317", "OTEL_EXPORTER_OTLP_PROTOCOL"],
            id="grpc-port-with-http-protocol",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            },
            ["OTEL_EXPORTER_OTLP_INSECURE", "ignored", "https://"],
            id="insecure-with-https",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_INSECURE": "false",
            },
            ["OTEL_EXPORTER_OTLP_INSECURE", "ignored", "http://"],
            id="secure-flag-with-http-scheme",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            },
            ["OTEL_EXPORTER_OTLP_INSECURE", "OTLP/HTTP"],
            id="insecure-with-http-protocol",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_CERTIFICATE": __file__,
            },
            ["OTEL_EXPORTER_OTLP_CERTIFICATE", "plaintext"],
            id="ca-file-with-plaintext-endpoint",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": __file__,
            },
            ["OTEL_EXPORTER_OTLP_CLIENT_KEY", "not set"],
            id="client-certificate-without-key",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_HEADERS": f"bad header={_SECRET}"},
            ["'bad header'", "left out"],
            id="invalid-header-name",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_HEADERS": f"grpc-timeout={_SECRET}",
            },
            ["'grpc-timeout'", "reserves"],
            id="reserved-grpc-header",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%0A{_SECRET}"},
            ["'authorization'", "line break"],
            id="header-value-with-newline",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "0"},
            ["OTEL_EXPORTER_OTLP_TIMEOUT", "10 seconds"],
            id="zero-timeout",
        ),
        pytest.param(
            {"SHOWMAX_OTEL_SPOOL_DIRECTORY": __file__ + "/spool"},
            ["SHOWMAX_OTEL_SPOOL_DIRECTORY", "not a directory"],
            id="spool-directory-under-a-file",
        ),
    ],
)
def test_contradictory_or_invalid_setting_gives_one_clear_warning(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: list[str]
) -> None:
    """Each bad export setting gives exactly one warning at init, naming it."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    _, messages = _init()

    assert len(messages) == 1, messages
    for fragment in expected:
        assert fragment in messages[0]
    assert _SECRET not in messages[0]


@pytest.mark.parametrize(
    "environment",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318"},
            id="https",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
                "OTEL_EXPORTER_OTLP_INSECURE": "true",
            },
            id="grpc-host-port-insecure",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://a:4318/custom/traces",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://b:4318/custom/logs",
            },
            id="per-signal-endpoints",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=t1"},
            id="headers",
        ),
    ],
)
def test_sound_settings_give_no_warning(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    """Valid export settings pass init without a single warning."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert configuration_problems(load_settings({})) == []


def test_password_in_endpoint_never_reaches_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint's password is never printed, even in a warning about it."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"user:{_SECRET}@collector:4318")

    _, messages = _init()

    assert messages
    assert all(_SECRET not in message for message in messages)
    assert any("REDACTED" in message for message in messages)


def test_plan_keeps_header_values_out_of_its_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resolved plan can be printed: header names show, values do not."""
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{_SECRET}"
    )

    plan = plan_export(load_settings({}), "logs")

    assert plan.headers == {"Authorization": f"Bearer {_SECRET}"}
    assert plan.header_names == ["Authorization"]
    assert _SECRET not in repr(plan)


@pytest.mark.parametrize(
    ("signal", "protocol", "endpoint", "expected"),
    [
        pytest.param(
            "traces",
            "http/protobuf",
            "http://c:4318/prefix/",
            "http://c:4318/prefix/v1/traces",
            id="http-prefix-path",
        ),
        pytest.param(
            "logs",
            "http/protobuf",
            None,
            "http://localhost:4318/v1/logs",
            id="http-default",
        ),
        pytest.param(
            "logs",
            "grpc",
            None,
            "http://localhost:4317",
            id="grpc-default",
        ),
        pytest.param(
            "logs",
            "grpc",
            "HTTPS://c:4317",
            "https://c:4317",
            id="grpc-scheme-case",
        ),
        pytest.param(
            "logs",
            "grpc",
            "c:4317",
            "https://c:4317",
            id="grpc-no-scheme-tls",
        ),
    ],
)
def test_resolved_endpoint(
    signal: str, protocol: str, endpoint: str | None, expected: str
) -> None:
    """Endpoints resolve per the specification's rules."""
    settings = load_settings({"protocol": protocol, "endpoint": endpoint})

    assert plan_export(settings, signal).endpoint == expected


def _one_log_record() -> list[Any]:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("tests").emit(body="one record")

    return list(exporter.get_finished_logs())


def _poll(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)

    return True


def test_an_export_cut_short_by_shutdown_keeps_the_exporter_quiet() -> None:
    """The SDK exporter's lines while an export ends after shutdown are held
    back like the rest ("Shutdown in progress, aborting retry.")."""
    import threading

    from showmax_otel._exporters import build_exporter
    from showmax_otel._pipeline import native_start_thread

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    settings = load_settings(
        {"endpoint": f"http://127.0.0.1:{dead}", "timeout_seconds": 10.0}
    )
    sender = build_exporter(settings, "logs")
    catcher = sender._catcher
    # The logger the SDK's HTTP client logs its retries on.
    client_logger = logging.getLogger("opentelemetry.exporter.otlp.common.http")
    records = _one_log_record()
    done = threading.Event()

    def export() -> None:
        try:
            sender.export(records)
        finally:
            done.set()

    native_start_thread(export, "test-export")
    # The export retries a refused connection with backoff for up to 10 s.
    assert _poll(lambda: catcher.thread is not None, 5)
    sender.shutdown()

    assert catcher in client_logger.filters, "the catcher left a running export"
    assert done.wait(5)
    assert _poll(lambda: catcher not in client_logger.filters, 5)
