"""Zero-code: `opentelemetry-instrument` builds the pipeline `init_telemetry()` does.

Every launch mode runs for real in a subprocess (the standard library's
WSGI server under `python`, uWSGI, gunicorn) against a real OTLP receiver;
each request must give one server span and one record per log call, the
process must hold one provider of each kind and one bridge, and the
output must carry no "Overriding" warning.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from servers import (
    ServerProcess,
    free_port,
    gunicorn_command,
    server_env,
    uwsgi_command,
)

from showmax_otel import distro
from showmax_otel.server_logs import UWSGI_LOGFORMAT
from showmax_otel.testing import OTLPReceiver

APPS = Path(__file__).parent / "apps" / "zerocode"
BIN = Path(sys.executable).parent
REQUESTS = 3
WORK_LOG = "zero-code work {} done"


# -- registration and the distro's own decisions ------------------------------------


@pytest.mark.parametrize(
    ("group", "target"),
    [
        ("opentelemetry_distro", "showmax_otel.distro:ShowmaxDistro"),
        ("opentelemetry_configurator", "showmax_otel.distro:ShowmaxConfigurator"),
    ],
    ids=["distro", "configurator"],
)
def test_entry_point_is_registered_as_showmax_otel(group: str, target: str) -> None:
    """The package registers its distro and configurator under `showmax_otel`."""
    found = {ep.name: ep.value for ep in entry_points(group=group)}

    assert found.get("showmax_otel") == target


def test_distro_sets_defaults_and_keeps_what_the_user_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The distro fills in HTTP/protobuf and our configurator; it overrides nothing."""
    # Registered with monkeypatch, so that what configure() sets is undone.
    for name in (*distro._ENV_DEFAULTS, "OTEL_PYTHON_CONFIGURATOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")

    distro.ShowmaxDistro().configure()

    assert os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert os.environ["OTEL_TRACES_EXPORTER"] == "console"
    assert os.environ["OTEL_METRICS_EXPORTER"] == "none"
    assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "showmax_otel"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/gunicorn", "-k", "gevent", "app:app"], True),
        (["gunicorn", "--worker-class=gevent", "app:app"], True),
        (["gunicorn", "-kgevent", "app:app"], True),
        (["gunicorn", "--worker-class", "geventwebsocket.gunicorn.workers.X"], True),
        (["gunicorn", "-k", "sync", "app:app"], False),
        (["gunicorn", "app:app"], False),
        (["uwsgi", "--http-socket", ":0", "--gevent", "100"], True),
        (["uwsgi", "--gevent=100"], True),
        (["uwsgi", "--processes", "4"], False),
        (["python", "-m", "app", "--gevent"], False),
    ],
    ids=[
        "gunicorn-k",
        "gunicorn-worker-class-equals",
        "gunicorn-k-joined",
        "gunicorn-gevent-websocket",
        "gunicorn-sync",
        "gunicorn-default",
        "uwsgi-gevent",
        "uwsgi-gevent-equals",
        "uwsgi-no-gevent",
        "python",
    ],
)
def test_gevent_server_is_recognised_from_its_command_line(
    argv: list[str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The distro patches early only for commands that start a gevent server."""
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    monkeypatch.delenv("UWSGI_GEVENT", raising=False)

    assert distro._command_starts_gevent_server(argv) is expected


def test_gevent_in_a_uwsgi_ini_is_recognised(tmp_path: Path) -> None:
    """`gevent = N` in the ini file named by --ini counts as a gevent server."""
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nmaster = true\ngevent = 50\n")

    assert distro._command_starts_gevent_server(["uwsgi", "--ini", str(ini)])
    assert not distro._command_starts_gevent_server(["uwsgi", str(tmp_path / "x.ini")])


# -- launch modes, for real -----------------------------------------------------------


def _env(receiver: OTLPReceiver, extra: Mapping[str, str]) -> dict[str, str]:
    env = server_env(
        receiver.http_endpoint, extra={"OTEL_PYTHON_DISTRO": "showmax_otel"}
    )
    env["PYTHONPATH"] = str(APPS)
    env.update(extra)

    return env


def _instrument(*command: str) -> list[str]:
    return [str(BIN / "opentelemetry-instrument"), *command]


def _send_work(server: ServerProcess) -> list[dict[str, Any]]:
    return [server.get_json(f"/work/{n}") for n in range(REQUESTS)]


def _assert_one_of_everything(
    receiver: OTLPReceiver, answers: list[dict[str, Any]], output: str
) -> None:
    """One server span and one record per log call for each request, no doubles."""
    spans = receiver.spans()
    logs = receiver.logs()
    for answer in answers:
        trace_id = answer["trace_id"]
        server_spans = [
            s for s in spans if s.trace_id == trace_id and s.kind == "SPAN_KIND_SERVER"
        ]
        assert len(server_spans) == 1, (answer, server_spans)
        records = [r for r in logs if r.trace_id == trace_id]
        bodies = [r.body for r in records]
        assert bodies.count(WORK_LOG.format(answer["n"])) == 1, bodies
        assert len(bodies) == len(set(bodies)), bodies
    assert "Overriding" not in output, output


def _assert_single_pipeline(state: dict[str, Any]) -> None:
    assert state["configured"]
    assert state["tracer_provider_is_ours"] and state["logger_provider_is_ours"]
    assert state["exporting_span_processors"] == ["SpanQueueProcessor"]
    assert state["exporting_log_processors"] == ["LogQueueProcessor"]
    assert state["root_bridges"] == 1
    assert state["instrumentor_handler_is_ours"]
    assert state["findings"] == []


def _wait_for_work(receiver: OTLPReceiver, answers: list[dict[str, Any]]) -> None:
    trace_ids = {answer["trace_id"] for answer in answers}

    def arrived(r: OTLPReceiver) -> bool:
        span_ids = {s.trace_id for s in r.spans() if s.kind == "SPAN_KIND_SERVER"}
        log_ids = {record.trace_id for record in r.logs()}
        return trace_ids <= span_ids and trace_ids <= log_ids

    assert receiver.wait_for(arrived, 30), (receiver.spans(), receiver.logs())


@pytest.mark.servers
@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("cli", {}),
        ("init", {}),
        ("instrument_app", {}),
        ("init", {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}),
        ("init", {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false"}),
        ("init", {"OTEL_PYTHON_LOG_CORRELATION": "true"}),
        ("cli", {"OTEL_PYTHON_CONFIGURATOR": "showmax_otel"}),
        (
            "init",
            {"OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH": "patch_all"},
        ),
    ],
    ids=[
        "cli-alone",
        "cli-plus-init_telemetry",
        "cli-plus-instrument_app",
        "legacy-sdk-logging-on",
        "legacy-sdk-logging-off",
        "log-correlation-on",
        "configurator-named",
        "cli-gevent-switch",
    ],
)
def test_python_under_the_cli_gives_one_of_everything(
    receiver: OTLPReceiver, mode: str, extra: dict[str, str]
) -> None:
    """`opentelemetry-instrument python` in every mix: one span and record each."""
    port = free_port()
    env = _env(receiver, {"ZC_MODE": mode, **extra})
    argv = _instrument(sys.executable, "-m", "zc_serve", str(port))

    with ServerProcess(argv, port=port, env=env) as server:
        answers = _send_work(server)
        state = server.get_json("/state")
        _wait_for_work(receiver, answers)
        server.stop(signal.SIGTERM)
        output = server.output()

    _assert_single_pipeline(state)
    _assert_one_of_everything(receiver, answers, output)
    assert state["gevent_patched"] is ("GEVENT_PATCH" in str(extra))
    if extra.get("OTEL_PYTHON_LOG_CORRELATION") == "true":
        # The instrumentor's console handler shows the ids; ours still ships.
        assert state["root_handlers"] == ["StreamHandler", "BridgeHandler"]
        assert f"trace_id={answers[0]['trace_id']}" in output


@pytest.mark.servers
def test_application_basic_config_still_works_under_the_cli(
    receiver: OTLPReceiver,
) -> None:
    """An app's own basicConfig() after the CLI's set-up still adds its console."""
    port = free_port()
    env = _env(receiver, {"ZC_MODE": "cli", "ZC_BASIC_CONFIG": "1"})
    argv = _instrument(sys.executable, "-m", "zc_serve", str(port))

    with ServerProcess(argv, port=port, env=env) as server:
        answers = _send_work(server)
        state = server.get_json("/state")
        _wait_for_work(receiver, answers)
        server.stop(signal.SIGTERM)
        output = server.output()

    _assert_single_pipeline(state)
    _assert_one_of_everything(receiver, answers, output)
    assert "zc-console INFO zc_app zero-code work 0 done" in output


@pytest.mark.servers
@pytest.mark.slow
@pytest.mark.parametrize("gevent", [False, True], ids=["prefork", "gevent"])
def test_uwsgi_under_the_cli_exports_from_its_workers(
    receiver: OTLPReceiver, gevent: bool
) -> None:
    """The CLI's start-up runs in the uWSGI master; forked workers still export.

    The request log lines carry each request's trace id.
    """
    port = free_port()
    command = uwsgi_command(
        "zc_app:app", port, processes=2, gevent=10 if gevent else None
    )
    # Request logging stays on, with the trace id in each line.
    command = [arg for arg in command if arg != "--disable-logging"]
    command += ["--logformat", UWSGI_LOGFORMAT]
    env = _env(receiver, {"ZC_MODE": "init"})

    with ServerProcess(_instrument(*command), port=port, env=env) as server:
        answers = _send_work(server)
        state = server.get_json("/state")
        _wait_for_work(receiver, answers)
        server.stop(signal.SIGTERM)
        output = server.output()

    _assert_single_pipeline(state)
    assert state["gevent_patched"] is gevent
    _assert_one_of_everything(receiver, answers, output)
    master_pid = server.pid
    span_pids = {
        s.resource["process.pid"]
        for s in receiver.spans()
        if s.kind == "SPAN_KIND_SERVER"
    }
    assert master_pid not in span_pids
    for answer in answers:
        assert re.search(
            rf"GET /work/{answer['n']} .* trace_id={answer['trace_id']} ", output
        ), output


@pytest.mark.servers
@pytest.mark.slow
@pytest.mark.parametrize(
    ("gevent", "lazy_apps", "stop"),
    [
        (True, True, "sigterm"),
        (True, False, "sigterm"),
        (False, False, "fifo-q"),
    ],
    ids=["gevent-lazy-apps-sigterm", "gevent-sigterm", "prefork-fifo-q"],
)
def test_uwsgi_under_the_cli_flushes_what_workers_queued_at_exit(
    receiver: OTLPReceiver, tmp_path: Path, gevent: bool, lazy_apps: bool, stop: str
) -> None:
    """The CLI configures in uWSGI's master before its `uwsgi` module exists;
    the workers' exit hook must still flush what they queued.

    Nothing leaves on a timer, so only the flush at worker exit can deliver.
    """
    port = free_port()
    fifo = tmp_path / "master.fifo"
    extra = ["--master-fifo", str(fifo)]
    if gevent:
        extra.append("--gevent-early-monkey-patch")
    if lazy_apps:
        extra.append("--lazy-apps")
    command = uwsgi_command(
        "zc_app:app", port, processes=2, gevent=10 if gevent else None, extra=extra
    )
    env = _env(
        receiver,
        {
            "ZC_MODE": "cli",
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_BLRP_SCHEDULE_DELAY": "600000",
        },
    )

    with ServerProcess(_instrument(*command), port=port, env=env) as server:
        answers = _send_work(server)
        if stop == "sigterm":
            server.stop(signal.SIGTERM)
        else:
            with open(fifo, "wb", buffering=0) as pipe:
                pipe.write(b"q")
            assert server.wait(30) is not None, server.output()
        output = server.output()

    _wait_for_work(receiver, answers)
    _assert_one_of_everything(receiver, answers, output)


@pytest.mark.servers
@pytest.mark.slow
@pytest.mark.parametrize(
    ("worker_class", "preload"),
    [("sync", False), ("gevent", True)],
    ids=["sync", "gevent-preload"],
)
def test_gunicorn_under_the_cli_logs_access_lines_with_trace_ids(
    receiver: OTLPReceiver, worker_class: str, preload: bool
) -> None:
    """gunicorn under the CLI exports from its workers; access lines carry trace ids."""
    port = free_port()
    command = gunicorn_command(
        "zc_app:app",
        port,
        workers=2,
        worker_class=worker_class,
        preload=preload,
        extra=[
            "--logger-class",
            "showmax_otel.gunicorn_logger.GunicornLogger",
            "--access-logfile",
            "-",
        ],
    )
    env = _env(receiver, {"ZC_MODE": "cli"})

    with ServerProcess(_instrument(*command), port=port, env=env) as server:
        answers = _send_work(server)
        state = server.get_json("/state")
        _wait_for_work(receiver, answers)
        server.stop(signal.SIGTERM)
        output = server.output()

    _assert_single_pipeline(state)
    assert state["gevent_patched"] is (worker_class == "gevent")
    _assert_one_of_everything(receiver, answers, output)
    assert "Monkey-patching ssl after ssl has already been imported" not in output
    spans = {
        s.trace_id: s.span_id for s in receiver.spans() if s.kind == "SPAN_KIND_SERVER"
    }
    for answer in answers:
        trace_id = answer["trace_id"]
        line = f"GET /work/{answer['n']} HTTP/1.1"
        assert f'{line}" 200' in output and (
            f"trace_id={trace_id} span_id={spans[trace_id]}" in output
        ), output


@pytest.mark.servers
@pytest.mark.slow
def test_gunicorn_under_the_cli_writes_each_falcon_traceback_to_stderr_once(
    receiver: OTLPReceiver,
) -> None:
    """gunicorn hands `wsgi.errors` every stream handler of "gunicorn.error"
    but the first, which it takes for its stderr one: the bridge must not be
    that first handler, or Falcon's tracebacks are written twice."""
    port = free_port()
    command = gunicorn_command("zc_app:app", port, workers=1, worker_class="gevent")
    env = _env(receiver, {"ZC_MODE": "cli"})

    with ServerProcess(_instrument(*command), port=port, env=env) as server:
        for _ in range(2):
            status, _body = server.get("/fail")
            assert status == 500
        assert receiver.wait_for(
            lambda r: sum(x.severity_text == "ERROR" for x in r.logs()) >= 2, 20
        )
        server.stop(signal.SIGTERM)
        output = server.output()

    assert output.count("RuntimeError: zero-code failure") == 2, output


# -- a bare CLI, when ours is the only distro ---------------------------------------


def _venv_without_opentelemetry_distro(root: Path) -> Path:
    """A venv that sees every package of this one except opentelemetry-distro.

    Its site-packages links to each entry of ours, leaving out that
    distribution's metadata, which is where the entry points are found.
    """
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        check=True,
        timeout=120,
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    python = root / "bin" / "python"
    theirs = Path(
        subprocess.run(
            [
                str(python),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    for entry in ours.iterdir():
        if entry.name.startswith("opentelemetry_distro-"):
            continue
        target = theirs / entry.name
        if not target.exists():
            target.symlink_to(entry)

    return python


@pytest.mark.servers
@pytest.mark.slow
def test_bare_cli_picks_showmax_otel_when_it_is_the_only_distro(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """With no OTEL_PYTHON_DISTRO and no other distro installed, ours is used."""
    python = _venv_without_opentelemetry_distro(tmp_path / "venv")
    listed = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.metadata import entry_points;"
            "print(sorted(e.name for e in entry_points(group='opentelemetry_distro')))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(listed.stdout.replace("'", '"')) == ["showmax_otel"]

    port = free_port()
    env = _env(receiver, {"ZC_MODE": "cli"})
    del env["OTEL_PYTHON_DISTRO"]
    # The venv's own console script does not exist (no pip); run the CLI's
    # entry function with the venv's interpreter, as the script would.
    argv = [
        str(python),
        "-c",
        "import sys; from opentelemetry.instrumentation.auto_instrumentation "
        "import run; sys.argv[0] = 'opentelemetry-instrument'; run()",
        str(python),
        "-m",
        "zc_serve",
        str(port),
    ]

    with ServerProcess(argv, port=port, env=env) as server:
        answers = _send_work(server)
        state = server.get_json("/state")
        _wait_for_work(receiver, answers)
        server.stop(signal.SIGTERM)
        output = server.output()

    _assert_single_pipeline(state)
    _assert_one_of_everything(receiver, answers, output)
    resource = receiver.spans()[0].resource
    assert resource["telemetry.distro.name"] == "showmax-otel"
