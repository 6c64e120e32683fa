"""`showmax-otel doctor`: each broken set-up found, with its fix; a good one clean."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from showmax_otel import doctor, init_telemetry
from showmax_otel.testing import OTLPReceiver

APPS = Path(__file__).parent / "apps" / "zerocode"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test may add handlers and loggers; they are taken away after it."""
    before = {
        name: list(logger.handlers)
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_before = list(logging.root.handlers)
    yield
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                if handler not in before.get(name, []):
                    logger.removeHandler(handler)
                    handler.close()
    for handler in list(logging.root.handlers):
        if handler not in root_before:
            logging.root.removeHandler(handler)
            handler.close()


def codes(findings: list[doctor.Finding]) -> list[str]:
    return [finding.code for finding in findings]


def _run_cli(*argv: str) -> tuple[int, str]:
    """`showmax-otel doctor ARGV...` in a fresh process: (status, output)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    env["PYTHONPATH"] = str(APPS)
    return _run(argv, env)


def _run(argv: tuple[str, ...], env: dict[str, str]) -> tuple[int, str]:
    """(status, standard output); standard error is kept out of the output,
    where the handler probe's record goes to the app's own console handler."""
    completed = subprocess.run(
        [sys.executable, "-m", "showmax_otel.cli", "doctor", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed.returncode, completed.stdout


# -- a good set-up ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"], ids=["http", "grpc"])
def test_good_setup_has_no_findings_and_every_endpoint_answers(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """One bridge, a reachable collector for both signals: nothing to report."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken")
    init_telemetry()

    findings = doctor.check(network=True, timeout_seconds=5, probe_handlers=True)

    assert findings == []
    probes = [r for r in receiver.requests() if r.items == 0]
    assert sorted(r.signal for r in probes) == ["logs", "traces"]
    assert all(r.headers.get("authorization") == "Bearer t0ken" for r in probes)


def test_cli_on_a_good_app_exits_zero(receiver: OTLPReceiver) -> None:
    """`doctor module:app` on a well set-up service prints no findings, exit 0."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    env["PYTHONPATH"] = str(APPS)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint

    status, output = _run(("doctor_good_app:app",), env)

    assert status == 0, output
    assert output.strip().endswith("showmax-otel doctor: no findings")


# -- broken set-ups, one at a time --------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["same-logger", "propagates-to-root"],
)
def test_duplicate_handler_is_found(where: str) -> None:
    """Two handlers writing to one stream, on a logger or along its propagation."""
    logger = logging.getLogger(f"doctor.duplicate.{where}")
    logger.addHandler(logging.StreamHandler(sys.stdout))
    if where == "same-logger":
        logger.addHandler(logging.StreamHandler(sys.stdout))
    else:
        logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))

    findings = doctor.logging_findings()

    duplicates = [f for f in findings if f.code == "duplicate-handler"]
    assert [f for f in duplicates if logger.name in f.problem], findings
    assert all(f.fix for f in duplicates)


def test_foreign_bridge_beside_ours_is_a_duplicate() -> None:
    """The logging instrumentor's bridge next to ours ships each record twice."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    telemetry = init_telemetry(logs_exporter="none", traces_exporter="none")
    logging.getLogger().addHandler(
        LoggingHandler(logger_provider=telemetry.logger_provider)
    )

    assert "duplicate-handler" in codes(doctor.logging_findings())


def test_our_bridge_on_a_propagating_logger_is_not_a_duplicate() -> None:
    """Our bridge ships a record once even when it passes the bridge twice."""
    telemetry = init_telemetry(logs_exporter="none", traces_exporter="none")
    logging.getLogger("doctor.bridged").addHandler(telemetry.bridge.handler)

    assert doctor.logging_findings() == []


def _tcp_listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


@pytest.mark.parametrize(
    "kind", ["http", "socket", "syslog-tcp", "smtp"], ids=lambda kind: kind
)
def test_network_handler_on_the_root_logger_is_found(kind: str) -> None:
    """Handlers that do network I/O inside the logging call are reported."""
    with _tcp_listener() as listener:
        port = listener.getsockname()[1]
        handler: logging.Handler = {
            "http": lambda: logging.handlers.HTTPHandler(f"127.0.0.1:{port}", "/"),
            "socket": lambda: logging.handlers.SocketHandler("127.0.0.1", port),
            "syslog-tcp": lambda: logging.handlers.SysLogHandler(
                ("127.0.0.1", port), socktype=socket.SOCK_STREAM
            ),
            "smtp": lambda: logging.handlers.SMTPHandler(
                ("127.0.0.1", port), "a@example.test", ["b@example.test"], "x"
            ),
        }[kind]()
        logging.getLogger().addHandler(handler)

        findings = doctor.logging_findings()

    assert codes(findings) == ["network-handler"]
    assert "'root'" in findings[0].problem
    assert "QueueHandler" in findings[0].fix


def test_udp_syslog_and_queue_handlers_are_not_network_findings() -> None:
    """Datagram syslog and a queue in front of a network handler are fine."""
    import queue

    logging.getLogger().addHandler(logging.handlers.SysLogHandler(("127.0.0.1", 9)))
    logging.getLogger().addHandler(logging.handlers.QueueHandler(queue.SimpleQueue()))

    assert doctor.logging_findings() == []


class _SlowHandler(logging.Handler):
    """A handler whose emit takes as long as a slow disk or a remote peer."""

    def emit(self, record: logging.LogRecord) -> None:
        # Stands for slow I/O inside emit, which is what is measured.
        time.sleep(0.05)


def test_slow_handler_is_found_by_timing_one_record() -> None:
    """A handler slower than the limit for one record is reported when probed."""
    logging.getLogger("doctor.slow").addHandler(_SlowHandler())

    assert doctor.logging_findings(probe_handlers=False) == []
    findings = doctor.logging_findings(probe_handlers=True, slow_handler_millis=20)

    assert codes(findings) == ["slow-handler"]
    assert "'doctor.slow'" in findings[0].problem


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "import urllib3\nfrom gevent import monkey\nmonkey.patch_all()\n",
            "urllib3",
        ),
        (
            "from gevent import monkey\nmonkey.patch_all(thread=False)\n",
            "partial",
        ),
        (
            "from gevent import monkey\nmonkey.patch_all()\nimport urllib3\n",
            None,
        ),
    ],
    ids=["patched-after-urllib3", "patched-in-part", "patched-first"],
)
def test_late_or_partial_monkey_patching_is_found(
    script: str, expected: str | None
) -> None:
    """Patching after urllib3 was imported, or without threads, is reported."""
    script += (
        "import json\n"
        "from showmax_otel import doctor\n"
        "print(json.dumps([f.problem for f in doctor.gevent_findings()]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    problems = json.loads(completed.stdout.strip().splitlines()[-1])

    if expected is None:
        assert problems == []
    else:
        assert [p for p in problems if expected in p], problems


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        (
            "[uwsgi]\nmodule = app:app\nmaster = true\nprocesses = 4\n",
            ["enable-threads"],
        ),
        (
            "[uwsgi]\nmodule = app:app\nenable-threads = true\nskip-atexit = true\n",
            ["skip-atexit"],
        ),
        ("[uwsgi]\nmodule = app:app\nmaster = true\nenable-threads = true\n", []),
        ("[uwsgi]\nmodule = app:app\nthreads = 4\n", []),
    ],
    ids=["no-enable-threads", "skip-atexit", "good", "threads-imply-them"],
)
def test_uwsgi_ini_options_that_lose_telemetry_are_found(
    tmp_path: Path, ini: str, expected: list[str]
) -> None:
    """A uWSGI ini without enable-threads (or with skip-atexit) is reported."""
    path = tmp_path / "app.ini"
    path.write_text(ini)

    findings = doctor.server_findings(f"uwsgi --ini {path}")

    assert codes(findings) == ["uwsgi-option"] * len(expected)
    for finding, option in zip(findings, expected, strict=True):
        assert option in finding.problem + finding.fix


@pytest.mark.parametrize("form", ["--ini {}", "--ini={}", "{}"])
def test_an_ini_file_that_cannot_be_read_is_reported(tmp_path: Path, form: str) -> None:
    """A missing ini is said to be missing, not read as an empty configuration."""
    missing = tmp_path / "nosuch.ini"

    findings = doctor.server_findings("uwsgi " + form.format(missing))

    assert codes(findings)[0] == "uwsgi-ini-unreadable"
    assert str(missing) in findings[0].problem
    assert "No such file" in findings[0].problem


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("gunicorn --graceful-timeout 2 app:app", ["gunicorn-graceful-timeout"]),
        ("gunicorn -k gevent --preload app:app", ["gunicorn-preload-gevent"]),
        ("gunicorn -k gevent -w 4 app:app", []),
    ],
    ids=["graceful-timeout-short", "preload-gevent", "good"],
)
def test_gunicorn_options_that_lose_telemetry_are_found(
    command: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn options that kill the final flush or patch too late are reported."""
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)

    assert codes(doctor.server_findings(command)) == expected


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4318"},
            ["signal-endpoint-path"],
        ),
        (
            {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4318/v1/logs/v1/logs"},
            ["signal-endpoint-path"],
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/logs"},
            ["signal-endpoint-path"],
        ),
        ({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4318/v1/logs"}, []),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4317",
            },
            [],
        ),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc def"}, ["header-not-url-encoded"]),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=100%"}, ["header-not-url-encoded"]),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "just-a-token"}, ["header-format"]),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=x%20y,b=c2VjcmV0=="}, []),
        (
            {
                "OTEL_PYTHON_DISTRO": "showmax_otel",
                "OTEL_PYTHON_CONFIGURATOR": "configurator",
            },
            ["configurator-mismatch"],
        ),
        (
            {
                "OTEL_PYTHON_DISTRO": "distro",
                "OTEL_PYTHON_CONFIGURATOR": "showmax_otel",
            },
            ["distro-mismatch"],
        ),
    ],
    ids=[
        "logs-endpoint-without-path",
        "logs-endpoint-path-doubled",
        "traces-endpoint-with-logs-path",
        "logs-endpoint-right",
        "grpc-endpoint-needs-no-path",
        "header-with-space",
        "header-with-bare-percent",
        "header-without-equals",
        "headers-encoded",
        "other-configurator",
        "other-distro",
    ],
)
def test_environment_mistakes_are_found(
    variables: dict[str, str], expected: list[str]
) -> None:
    """Each common OTEL_* mistake is one finding; correct values give none."""
    assert codes(doctor.environment_findings(variables)) == expected


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ("4.4.0", []),
        ("3.1.3", []),
        ("2.0.0", ["falcon-version"]),
        ("5.0.1", ["falcon-version"]),
    ],
    ids=["4.4", "3.1", "too-old", "too-new"],
)
def test_falcon_version_is_checked_against_the_supported_range(
    monkeypatch: pytest.MonkeyPatch, installed: str, expected: list[str]
) -> None:
    """A Falcon outside the supported releases is reported with the range."""
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: installed if name == "falcon" else real_version(name),
    )

    findings = doctor.falcon_findings()

    assert codes(findings) == expected
    assert all(">=3.1,<5" in f.fix for f in findings)


def test_endpoint_without_scheme_is_found(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint typed as host:port is reported, with the URL it became."""
    host_port = receiver.http_endpoint.partition("://")[2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", host_port)

    findings = doctor.check(network=False)

    assert codes(findings) == ["export-setting"]
    assert "no http:// or https:// scheme" in findings[0].problem


@pytest.mark.parametrize(
    "failure", ["nothing-listens", "answers-503"], ids=lambda failure: failure
)
def test_endpoint_that_does_not_answer_is_found_per_signal(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Each signal whose endpoint does not accept an export is one finding."""
    if failure == "nothing-listens":
        with _tcp_listener() as listener:
            endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        expected = "no answer"
    else:
        endpoint = receiver.http_endpoint
        receiver.fail_next(2, status=503)
        expected = "answered HTTP 503"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)

    findings = doctor.check(network=True, timeout_seconds=5)

    assert codes(findings) == ["endpoint-unreachable"] * 2
    assert [f.problem.split(" ")[0] for f in findings] == ["traces", "logs"]
    assert all(expected in f.problem for f in findings)


def test_cli_on_a_broken_app_lists_each_problem_and_never_a_secret() -> None:
    """`doctor module:app` reports every problem with its fix, exit 1, no secrets."""
    secret = "s3cr3t-t0ken-value"
    env_extra = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:{secret}@127.0.0.1:9?key={secret}",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {secret}",
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    env.update(env_extra, PYTHONPATH=str(APPS))

    status, output = _run(("doctor_broken_app:app", "--timeout", "2", "--json"), env)

    assert status == 1, output
    assert secret not in output
    found = json.loads(output)
    found_codes = {item["code"] for item in found}
    assert {
        "network-handler",
        "duplicate-handler",
        "header-not-url-encoded",
        "endpoint-unreachable",
        "not-initialized",
    } <= found_codes, found
    assert all(item["fix"] for item in found)


def test_cli_without_a_target_checks_the_environment(tmp_path: Path) -> None:
    """`doctor --uwsgi-ini FILE --no-network` checks the file and the variables."""
    ini = tmp_path / "service.ini"
    ini.write_text("[uwsgi]\nmodule = app:app\nmaster = true\n")

    status, output = _run_cli("--uwsgi-ini", str(ini), "--no-network")

    assert status == 1, output
    assert "[uwsgi-option]" in output and "enable-threads" in output
    assert output.strip().endswith("showmax-otel doctor: 1 finding")


def test_init_time_findings_are_cheap_and_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At init: local findings only; no endpoint probe, nothing the exporters warn."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc def")
    logging.getLogger("doctor.init").addHandler(logging.StreamHandler(sys.stdout))
    logging.getLogger("doctor.init").addHandler(logging.StreamHandler(sys.stdout))
    with pytest.warns(UserWarning):
        telemetry = init_telemetry()

    started = time.perf_counter()
    findings = doctor.init_time_findings(telemetry)
    elapsed_seconds = time.perf_counter() - started

    assert codes(findings) == ["header-not-url-encoded", "duplicate-handler"]
    # A loose bound: no network round trip or handler probe happened.
    assert elapsed_seconds < 1.0


def test_a_no_op_provider_kept_at_init_is_found(receiver: OTLPReceiver) -> None:
    """doctor names a global provider that takes no processors; init warned."""
    from opentelemetry import trace

    from showmax_otel.options import ConfigurationWarning

    trace.set_tracer_provider(trace.NoOpTracerProvider())
    with pytest.warns(ConfigurationWarning, match="NoOpTracerProvider"):
        telemetry = init_telemetry(endpoint=receiver.http_endpoint)

    findings = doctor.check(telemetry, network=False)
    (silent,) = [f for f in findings if f.code == "silent-provider"]
    assert "TracerProvider (NoOpTracerProvider)" in silent.problem
    assert "OTEL_PYTHON_TRACER_PROVIDER" in silent.fix
    assert "silent-provider" not in codes(doctor.init_time_findings(telemetry))


def test_add_arguments_builds_the_documented_options() -> None:
    """The subcommand's options parse as documented."""
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)

    args = parser.parse_args(["svc:app", "--server", "uwsgi --ini a.ini", "--json"])

    assert (args.target, args.server, args.json, args.no_network) == (
        "svc:app",
        "uwsgi --ini a.ini",
        True,
        False,
    )
