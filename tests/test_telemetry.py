"""init_telemetry(): one pipeline, one bridge, export off the request path."""

from __future__ import annotations

import gc
import json
import logging
import logging.config
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

import showmax_otel
from showmax_otel import _state
from showmax_otel._logging import BridgeHandler
from showmax_otel.options import ConfigurationWarning
from showmax_otel.testing import OTLPReceiver


def _bridges(logger: logging.Logger | None = None) -> list[logging.Handler]:
    target = logger or logging.getLogger()
    return [h for h in target.handlers if isinstance(h, BridgeHandler)]


def _init(receiver: OTLPReceiver, **options: object) -> showmax_otel.Telemetry:
    return showmax_otel.init_telemetry(
        service_name="tests",
        endpoint=receiver.http_endpoint,
        blrp_schedule_delay_millis=50,
        bsp_schedule_delay_millis=50,
        **options,
    )


def test_repeated_init_returns_the_same_object_and_one_handler(
    receiver: OTLPReceiver,
) -> None:
    """Many init_telemetry() calls build one pipeline and one bridge handler."""
    first = _init(receiver)
    again = [showmax_otel.init_telemetry() for _ in range(10)]

    assert all(t is first for t in again)
    assert len(_bridges()) == 1
    assert trace.get_tracer_provider() is first.tracer_provider


def test_each_log_call_arrives_once_however_often_get_logger_runs(
    receiver: OTLPReceiver,
) -> None:
    """Records arrive exactly once per log call after many init and get_logger calls."""
    telemetry = _init(receiver)
    for number in range(50):
        showmax_otel.init_telemetry()
        showmax_otel.get_logger("catalogue").warning("request %d", number)
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) >= 50, 5)
    bodies = sorted(r.body for r in receiver.logs())
    assert bodies == sorted(f"request {n}" for n in range(50))
    assert telemetry.stats()["logs"]["exported"] == 50


def test_a_record_inside_a_span_carries_its_ids(receiver: OTLPReceiver) -> None:
    """A record logged inside a span carries that span's trace_id and span_id."""
    telemetry = _init(receiver)
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        showmax_otel.get_logger("catalogue").error("inside")
        context = span.get_span_context()
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs() and r.spans(), 5)
    (record,) = receiver.logs()
    assert record.trace_id == format(context.trace_id, "032x")
    assert record.span_id == format(context.span_id, "016x")
    assert receiver.spans()[0].span_id == record.span_id


def test_resource_carries_service_name_and_pid(receiver: OTLPReceiver) -> None:
    """Exported records carry service.name and process.pid in their resource."""
    import os

    telemetry = _init(receiver, resource_attributes={"team": "catalogue"})
    showmax_otel.get_logger().warning("hello")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    resource = receiver.logs()[0].resource
    assert resource["service.name"] == "tests"
    assert resource["process.pid"] == os.getpid()
    assert resource["team"] == "catalogue"


@pytest.mark.parametrize(
    "reconfigure",
    [
        pytest.param(lambda: logging.basicConfig(), id="basicConfig"),
        pytest.param(lambda: logging.basicConfig(force=True), id="basicConfig-force"),
        pytest.param(
            lambda: logging.config.dictConfig(
                {
                    "version": 1,
                    "disable_existing_loggers": False,
                    "handlers": {"console": {"class": "logging.StreamHandler"}},
                    "root": {"handlers": ["console"], "level": "INFO"},
                }
            ),
            id="dictConfig",
        ),
        pytest.param(
            lambda: logging.getLogger().handlers.clear(), id="handlers-cleared"
        ),
    ],
)
def test_logging_reconfiguration_leaves_exactly_one_bridge(
    receiver: OTLPReceiver, reconfigure: object
) -> None:
    """basicConfig, basicConfig(force=True) and dictConfig leave exactly one bridge."""
    telemetry = _init(receiver)
    reconfigure()  # type: ignore[operator]
    # A new name: dictConfig disables loggers that existed before it, as the
    # standard library documents, and that is not the bridge's business.
    logger = showmax_otel.get_logger(f"catalogue.{id(reconfigure)}")
    logger.warning("after reconfiguration")
    assert telemetry.force_flush(5)

    assert len(_bridges()) == 1
    assert receiver.wait_for(lambda r: r.logs(), 5)
    assert [r.body for r in receiver.logs()] == ["after reconfiguration"]


def test_the_logging_instrumentor_does_not_add_a_second_bridge(
    receiver: OTLPReceiver,
) -> None:
    """Instrumenting logging after init still ships each record once."""
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    telemetry = _init(receiver)
    LoggingInstrumentor().instrument()
    try:
        showmax_otel.get_logger("catalogue").warning("once")
        assert telemetry.force_flush(5)
        assert receiver.wait_for(lambda r: r.logs(), 5)
        assert len(_bridges()) == 1
        assert [r.body for r in receiver.logs()] == ["once"]
    finally:
        LoggingInstrumentor().uninstrument()


def test_console_handlers_of_the_application_keep_working(
    receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user's own console handler still prints every record."""
    import io

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    logging.getLogger().addHandler(console)
    try:
        _init(receiver)
        showmax_otel.get_logger("catalogue").warning("to the console too")
    finally:
        logging.getLogger().removeHandler(console)

    assert "to the console too" in stream.getvalue()


def test_non_propagating_loggers_are_shipped_once_even_if_propagation_changes(
    receiver: OTLPReceiver,
) -> None:
    """A listed non-propagating logger ships each record once, propagating or not."""
    telemetry = _init(receiver, bridge_loggers=["gunicorn.error"])
    gunicorn_error = logging.getLogger("gunicorn.error")
    gunicorn_error.propagate = False
    try:
        gunicorn_error.warning("not propagating")
        gunicorn_error.propagate = True
        gunicorn_error.warning("propagating")
        assert telemetry.force_flush(5)
    finally:
        gunicorn_error.propagate = True

    assert receiver.wait_for(lambda r: len(r.logs()) >= 2, 5)
    assert sorted(r.body for r in receiver.logs()) == ["not propagating", "propagating"]


@pytest.mark.parametrize(
    "name",
    ["showmax_otel.pipeline", "opentelemetry.sdk", "urllib3.connectionpool", "grpc"],
)
def test_records_of_our_own_and_exporter_loggers_are_never_shipped(
    receiver: OTLPReceiver, name: str
) -> None:
    """Our loggers, OpenTelemetry's and the export clients' never reach the bridge."""
    telemetry = _init(receiver)
    logging.getLogger(name).warning("internal")
    showmax_otel.get_logger("app").warning("application")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    assert [r.body for r in receiver.logs()] == ["application"]


def test_get_logger_never_adds_a_handler(receiver: OTLPReceiver) -> None:
    """get_logger() on every request adds no handler anywhere."""
    _init(receiver)
    before = {
        name: list(logging.getLogger(name).handlers) for name in ("", "catalogue")
    }
    for _ in range(100):
        showmax_otel.get_logger("catalogue")
        showmax_otel.get_logger()

    after = {name: list(logging.getLogger(name).handlers) for name in before}
    assert after == before


def test_init_from_many_threads_builds_one_pipeline(receiver: OTLPReceiver) -> None:
    """Concurrent init_telemetry() calls from threads return one object."""
    results: list[showmax_otel.Telemetry] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait(5)
        results.append(_init(receiver))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(results) == 8
    assert len({id(t) for t in results}) == 1
    assert len(_bridges()) == 1


def test_a_second_call_with_other_options_warns_and_changes_nothing(
    receiver: OTLPReceiver,
) -> None:
    """Asking for different options later warns once, naming them."""
    telemetry = _init(receiver)
    with pytest.warns(ConfigurationWarning, match="service_name"):
        again = showmax_otel.init_telemetry(service_name="other")

    assert again is telemetry
    assert telemetry.settings.service_name == "tests"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"protocol": "http"}, "'protocol' must be one of", id="protocol"),
        pytest.param(
            {"bsp_max_queue_size": 0},
            "'bsp_max_queue_size' must be a whole",
            id="queue",
        ),
        pytest.param(
            {"traces_sampler_arg": 2},
            "'traces_sampler_arg' must be a number from 0",
            id="ratio",
        ),
        pytest.param({"headers": "novalue"}, "<hidden>", id="secret-not-echoed"),
    ],
)
def test_bad_options_raise_naming_option_value_and_what_is_accepted(
    options: dict[str, object], message: str
) -> None:
    """A bad keyword raises at init with the option, the rule and the value."""
    with pytest.raises(ValueError, match=message):
        showmax_otel.init_telemetry(**options)
    assert not _state.is_configured()


def test_an_unknown_option_suggests_the_right_name() -> None:
    """A misspelt option raises TypeError with a did-you-mean."""
    with pytest.raises(TypeError, match="did you mean 'service_name'"):
        showmax_otel.init_telemetry(servce_name="x")


def test_a_bad_environment_value_warns_and_falls_back(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid OTEL_* value warns with the variable's name and uses the default."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    with pytest.warns(ConfigurationWarning, match="OTEL_BSP_MAX_QUEUE_SIZE='lots'"):
        telemetry = _init(receiver)

    assert telemetry.settings.bsp_max_queue_size == 2048


def test_environment_variables_configure_the_pipeline(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options left out come from the standard OTEL_* variables."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "region=af-south-1")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "20")
    telemetry = showmax_otel.init_telemetry()
    showmax_otel.get_logger("app").warning("configured by env")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    resource = receiver.logs()[0].resource
    assert resource["service.name"] == "from-env"
    assert resource["region"] == "af-south-1"


def test_sdk_disabled_sets_nothing_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true gives a Telemetry with no provider and no handler."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry = showmax_otel.init_telemetry()

    assert telemetry.tracer_provider is None
    assert _bridges() == []
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert telemetry.shutdown(1)


def test_a_full_queue_drops_the_oldest_and_counts_it(receiver: OTLPReceiver) -> None:
    """Past the queue size the oldest record is dropped and counted as queue_full."""
    receiver.hold_responses(True)
    telemetry = _init(
        receiver,
        blrp_max_queue_size=100,
        blrp_max_export_batch_size=100,
        timeout_seconds=1,
    )
    logger = showmax_otel.get_logger("burst")
    for number in range(1000):
        logger.warning("record %d", number)

    stats = telemetry.stats()["logs"]
    assert stats["emitted"] == 1000
    assert stats["dropped"].get("queue_full", 0) >= 800
    receiver.hold_responses(False)


def test_a_collector_that_never_answers_cannot_hold_a_request_or_shutdown(
    receiver: OTLPReceiver,
) -> None:
    """With a blackhole collector, logging returns and shutdown keeps its bound."""
    receiver.hold_responses(True)
    _init(receiver, timeout_seconds=30)
    logger = showmax_otel.get_logger("app")
    tracer = trace.get_tracer("tests")

    started = time.monotonic()
    for number in range(600):
        with tracer.start_as_current_span("request"):
            logger.warning("request %d", number)
    request_path_seconds = time.monotonic() - started

    started = time.monotonic()
    delivered = showmax_otel.shutdown_telemetry(timeout_seconds=1.0)
    shutdown_seconds = time.monotonic() - started
    receiver.hold_responses(False)

    assert delivered is False
    # Loose bounds: the request path never waited for the 30 s export timeout.
    assert request_path_seconds < 10
    assert shutdown_seconds < 3
    stats = _state.current()
    assert stats is not None
    counted = stats.stats()["logs"]
    assert counted["queued"] == 0
    assert counted["exported"] + sum(counted["dropped"].values()) == 600


def test_shutdown_is_harmless_before_init_and_twice(receiver: OTLPReceiver) -> None:
    """shutdown_telemetry() before init and a second time return True."""
    assert showmax_otel.shutdown_telemetry() is True
    _init(receiver)
    showmax_otel.get_logger().warning("last words")

    assert showmax_otel.shutdown_telemetry(5) is True
    assert showmax_otel.shutdown_telemetry(5) is True
    assert receiver.wait_for(lambda r: r.logs(), 5)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )


def test_importing_the_package_does_nothing() -> None:
    """`import showmax_otel` starts no thread and loads no ssl, grpc or requests."""
    result = _run_python(
        """
        import json, sys, threading
        before = threading.active_count()
        import showmax_otel
        from opentelemetry import trace
        print(json.dumps({
            "threads": threading.active_count() - before,
            "loaded": sorted(m for m in ("ssl", "grpc", "requests", "urllib3")
                             if m in sys.modules),
            "provider": type(trace.get_tracer_provider()).__name__,
            "handlers": len(__import__("logging").getLogger().handlers),
        }))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "threads": 0,
        "loaded": [],
        "provider": "ProxyTracerProvider",
        "handlers": 0,
    }


def test_records_logged_just_before_exit_reach_the_collector(
    receiver: OTLPReceiver,
) -> None:
    """What a process logs right before a normal exit is exported at exit."""
    result = _run_python(
        f"""
        import showmax_otel
        showmax_otel.init_telemetry(endpoint={receiver.http_endpoint!r})
        log = showmax_otel.get_logger("app")
        for n in range(300):
            log.warning("final %d", n)
        """
    )
    assert result.returncode == 0, result.stderr

    assert receiver.wait_for(lambda r: len(r.logs()) >= 300, 10)
    assert len(receiver.logs()) == 300


def test_grpc_export_reaches_the_receiver(receiver: OTLPReceiver) -> None:
    """protocol='grpc' ships spans and records over OTLP/gRPC."""
    telemetry = showmax_otel.init_telemetry(
        service_name="tests", endpoint=receiver.grpc_endpoint, protocol="grpc"
    )
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("over-grpc"):
        showmax_otel.get_logger("app").warning("over grpc")
    assert telemetry.force_flush(10)

    assert receiver.wait_for(lambda r: r.logs() and r.spans(), 10)
    assert {r.protocol for r in receiver.requests()} == {"grpc"}
    assert receiver.logs()[0].trace_id == receiver.spans()[0].trace_id


def test_init_from_many_greenlets_builds_one_pipeline(receiver: OTLPReceiver) -> None:
    """Under gevent, concurrent init_telemetry() calls return one object."""
    result = _run_python(
        f"""
        from gevent import monkey; monkey.patch_all()
        import json, logging, gevent, showmax_otel
        from showmax_otel._logging import BridgeHandler
        def call(n):
            gevent.sleep(0)
            t = showmax_otel.init_telemetry(endpoint={receiver.http_endpoint!r})
            showmax_otel.get_logger("greenlet").warning("greenlet %d", n)
            return id(t)
        jobs = [gevent.spawn(call, n) for n in range(20)]
        gevent.joinall(jobs, timeout=30)
        bridges = [h for h in logging.getLogger().handlers
                   if isinstance(h, BridgeHandler)]
        print(json.dumps({{"ids": len({{j.value for j in jobs}}),
                          "bridges": len(bridges),
                          "flushed": showmax_otel.shutdown_telemetry(10)}}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "ids": 1,
        "bridges": 1,
        "flushed": True,
    }
    assert receiver.wait_for(lambda r: len(r.logs()) >= 20, 10)
    assert sorted(r.body for r in receiver.logs()) == sorted(
        f"greenlet {n}" for n in range(20)
    )


def test_a_forked_child_exports_its_own_records_with_its_own_pid(
    receiver: OTLPReceiver,
) -> None:
    """After os.fork() the child ships its records under its pid; the parent too."""
    result = _run_python(
        f"""
        import json, os, showmax_otel
        showmax_otel.init_telemetry(endpoint={receiver.http_endpoint!r},
                                    blrp_schedule_delay_millis=50)
        log = showmax_otel.get_logger("fork")
        log.warning("parent before fork")
        pid = os.fork()
        if pid == 0:
            log.warning("child")
            ok = showmax_otel.shutdown_telemetry(10)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        log.warning("parent after fork")
        print(json.dumps({{"child": pid, "parent": os.getpid(),
                          "child_status": status,
                          "flushed": showmax_otel.shutdown_telemetry(10)}}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["child_status"] == 0
    assert report["flushed"] is True

    assert receiver.wait_for(lambda r: len(r.logs()) >= 3, 10)
    by_body = {r.body: r.resource["process.pid"] for r in receiver.logs()}
    assert by_body == {
        "parent before fork": report["parent"],
        "child": report["child"],
        "parent after fork": report["parent"],
    }
    assert len(receiver.logs()) == 3
    instance = {r.body: r.resource["service.instance.id"] for r in receiver.logs()}
    assert instance["parent before fork"] == instance["parent after fork"]
    assert instance["child"] != instance["parent before fork"]


def test_a_configured_instance_id_is_kept_in_a_forked_child(
    receiver: OTLPReceiver,
) -> None:
    """service.instance.id from OTEL_RESOURCE_ATTRIBUTES survives the fork."""
    result = _run_python(
        f"""
        import os, showmax_otel
        os.environ["OTEL_RESOURCE_ATTRIBUTES"] = "service.instance.id=pod-7"
        showmax_otel.init_telemetry(endpoint={receiver.http_endpoint!r})
        pid = os.fork()
        if pid == 0:
            showmax_otel.get_logger("fork").warning("child")
            os._exit(0 if showmax_otel.shutdown_telemetry(10) else 3)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        """
    )
    assert result.returncode == 0, result.stderr

    assert receiver.wait_for(lambda r: len(r.logs()) == 1, 10)
    assert receiver.logs()[0].resource["service.instance.id"] == "pod-7"


def test_a_forked_child_that_exits_at_once_does_not_wait_or_count_the_parent(
    receiver: OTLPReceiver,
) -> None:
    """A child exiting before it logs takes no shutdown wait and counts nothing."""
    result = _run_python(
        f"""
        import json, os, time, showmax_otel
        telemetry = showmax_otel.init_telemetry(
            endpoint={receiver.http_endpoint!r}, blrp_schedule_delay_millis=60000)
        log = showmax_otel.get_logger("fork")
        for n in range(10):
            log.warning("parent %d", n)
        pid = os.fork()
        if pid == 0:
            started = time.monotonic()
            stats = telemetry.stats()["logs"]
            ok = showmax_otel.shutdown_telemetry(5)
            took = time.monotonic() - started
            print(json.dumps({{"stats": stats, "ok": ok, "took": took}}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        showmax_otel.shutdown_telemetry(5)
        """
    )
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.splitlines()[0])

    assert child["ok"] is True
    assert child["took"] < 2
    assert child["stats"]["emitted"] == 0
    assert child["stats"]["queued"] == 0
    assert receiver.wait_for(lambda r: len(r.logs()) >= 10, 10)
    assert len(receiver.logs()) == 10


def test_own_reports_reach_stderr_when_the_app_configured_no_logging(
    receiver: OTLPReceiver,
) -> None:
    """With only the bridge on the root, drop reports still print to stderr."""
    result = _run_python(
        """
        import showmax_otel
        telemetry = showmax_otel.init_telemetry(
            endpoint="http://127.0.0.1:9", timeout_seconds=0.5,
            report_interval_seconds=0)
        log = showmax_otel.get_logger("app")
        for n in range(20):
            log.warning("record %d", n)
        showmax_otel.shutdown_telemetry(3)
        """
    )

    assert result.returncode == 0, result.stderr
    assert "showmax_otel" in result.stderr
    assert "dropped" in result.stderr


@pytest.mark.parametrize(
    "where",
    [pytest.param("catalogue", id="named-logger"), pytest.param("", id="root")],
)
def test_a_hand_added_otel_handler_does_not_ship_records_twice(
    receiver: OTLPReceiver, where: str
) -> None:
    """Another OpenTelemetry bridge added by hand ships nothing ours already did."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    telemetry = _init(receiver)
    extra = LoggingHandler(logger_provider=telemetry.logger_provider)
    target = logging.getLogger(where or None)
    target.addHandler(extra)
    try:
        logging.getLogger("catalogue").warning("only once")
        assert telemetry.force_flush(5)
    finally:
        target.removeHandler(extra)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    assert [r.body for r in receiver.logs()] == ["only once"]


def test_each_record_carries_the_scope_of_its_own_logger(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records of many loggers, interleaved, keep their logger's name as scope,
    past the number of loggers the bridge keeps at hand too."""
    monkeypatch.setattr(showmax_otel._logging, "_MAX_SDK_LOGGERS", 2)
    telemetry = _init(receiver)
    names = ["catalogue", "catalogue.search", "billing", "catalogue"]
    for turn in range(3):
        for name in names:
            logging.getLogger(name).warning("%s %d", name, turn)
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) >= 12, 5)
    shipped = sorted((r.scope, r.body) for r in receiver.logs())
    assert shipped == sorted((n, f"{n} {t}") for t in range(3) for n in names)


@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_a_no_op_provider_set_before_init_is_named_and_the_other_signal_ships(
    receiver: OTLPReceiver, signal: str
) -> None:
    """A provider that takes no processors stays as it was set, with a warning;
    the application starts, and the other signal is exported as usual."""
    from opentelemetry._logs import NoOpLoggerProvider, set_logger_provider

    if signal == "traces":
        trace.set_tracer_provider(trace.NoOpTracerProvider())
        named = "NoOpTracerProvider"
    else:
        set_logger_provider(NoOpLoggerProvider())
        named = "NoOpLoggerProvider"
    with pytest.warns(ConfigurationWarning) as caught:
        telemetry = _init(receiver)
    (message,) = [str(w.message) for w in caught]
    assert named in message
    assert "takes no processors" in message

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("work"):
        showmax_otel.get_logger("catalogue").warning("inside")
    assert telemetry.force_flush(5)

    if signal == "traces":
        assert receiver.wait_for(lambda r: r.logs(), 5)
        assert [r.body for r in receiver.logs()] == ["inside"]
        assert receiver.spans() == []
        assert set(telemetry.stats()) >= {"logs"}
    else:
        assert receiver.wait_for(lambda r: r.spans(), 5)
        assert [s.name for s in receiver.spans()] == ["work"]
        assert receiver.logs() == []


def test_an_sdk_logger_provider_set_before_init_is_kept_and_ships(
    receiver: OTLPReceiver,
) -> None:
    """The package adds its processor to a LoggerProvider set first, and says so."""
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider

    theirs = LoggerProvider(shutdown_on_exit=False)
    set_logger_provider(theirs)
    with pytest.warns(ConfigurationWarning, match="LoggerProvider.*adds its"):
        telemetry = _init(receiver)

    showmax_otel.get_logger("catalogue").warning("through theirs")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    assert [r.body for r in receiver.logs()] == ["through theirs"]
    assert get_logger_provider() is theirs
    assert telemetry.logger_provider is theirs


def test_a_provider_set_before_init_is_not_warned_about_when_its_signal_is_off(
    receiver: OTLPReceiver,
) -> None:
    """With traces_exporter="none" nothing is added to a TracerProvider set
    first, and nothing is said about it (warnings are errors here)."""
    from opentelemetry.sdk.trace import TracerProvider

    theirs = TracerProvider(shutdown_on_exit=False)
    trace.set_tracer_provider(theirs)
    telemetry = _init(receiver, traces_exporter="none")

    assert telemetry.tracer_provider is theirs
    assert telemetry.stats()["spans"]["emitted"] == 0
    with trace.get_tracer("tests").start_as_current_span("unexported"):
        pass
    assert telemetry.stats()["spans"]["emitted"] == 0


class _Keep(LogRecordProcessor):
    """A processor of the application's own, added to the package's provider."""

    def __init__(self) -> None:
        self.records: list[ReadWriteLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.records.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_an_application_processor_sees_each_bridged_record_whole(
    receiver: OTLPReceiver,
) -> None:
    """The bridge hands the SDK logger a whole record: processors and export agree."""
    telemetry = _init(receiver)
    kept = _Keep()
    telemetry.logger_provider.add_log_record_processor(kept)
    extra = {"catalogue.item": 7, "catalogue.ratio": 0.5, "catalogue.name": "x"}

    showmax_otel.get_logger("catalogue").warning("item %d", 7, extra=extra)
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) == 1, 5)
    (seen,) = kept.records
    (arrived,) = receiver.logs()
    assert isinstance(seen, ReadWriteLogRecord)
    assert seen.resource is telemetry.logger_provider.resource
    assert seen.instrumentation_scope is not None
    assert seen.instrumentation_scope.name == "catalogue"
    assert dict(seen.log_record.attributes or {}) == extra
    # The bridge's own road: the SDK did not copy the attributes again (its
    # road leaves a BoundedAttributes; see BridgeHandler._ship).
    assert type(seen.log_record.attributes) is dict
    assert arrived.attributes == extra
    assert arrived.body == "item 7"


@pytest.mark.filterwarnings(
    "ignore::opentelemetry.sdk._logs._internal.LogRecordDroppedAttributesWarning"
)
def test_sdk_attribute_limits_still_apply_to_bridged_records(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_LOGRECORD_ATTRIBUTE_* limits cut records as the SDK's own path would."""
    monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    telemetry = _init(receiver)
    extra = {"a.one": "123456", "a.two": "x", "a.three": "y"}

    showmax_otel.get_logger("catalogue").warning("limited", extra=extra)
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) == 1, 5)
    (arrived,) = receiver.logs()
    assert len(arrived.attributes) == 2
    assert all(len(str(value)) <= 4 for value in arrived.attributes.values())


def _lookup(catalogue: dict[str, int]) -> int:
    return catalogue["missing"] + len(catalogue) * 2


def test_a_logged_exception_ships_the_standard_traceback_without_marker_lines(
    receiver: OTLPReceiver,
) -> None:
    """The stack trace is format_exception()'s text, chained causes included,
    minus the column markers (^^^^, ~~~~) that Python 3.11 and newer add."""
    import traceback

    telemetry = _init(receiver)
    try:
        try:
            _lookup({})
        except KeyError as cause:
            raise RuntimeError("catalogue lookup failed") from cause
    except RuntimeError as error:
        showmax_otel.get_logger("catalogue").exception("failed")
        standard = "".join(traceback.format_exception(error))
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    (record,) = receiver.logs()
    stack = record.attributes["exception.stacktrace"]
    without_markers = "".join(
        line
        for line in standard.splitlines(keepends=True)
        if not (line.strip() and set(line.strip()) <= set("^~"))
    )
    assert stack == without_markers
    assert 'return catalogue["missing"] + len(catalogue) * 2' in stack
    assert "The above exception was the direct cause" in stack


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.11 API")
def test_a_logged_exception_stays_picklable_and_its_later_notes_show(
    receiver: OTLPReceiver,
) -> None:
    """Logging an exception leaves nothing on it: it pickles as before, and a
    note added afterwards is in the next record's stack trace."""
    import pickle

    telemetry = _init(receiver)
    log = showmax_otel.get_logger("catalogue")
    try:
        raise ValueError("item 3 missing")
    except ValueError as error:
        log.exception("first")
        assert pickle.loads(pickle.dumps(error)).args == ("item 3 missing",)
        error.add_note("while importing order 42")
        log.exception("second")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) >= 2, 5)
    first, second = sorted(receiver.logs(), key=lambda r: r.body)
    assert "while importing order 42" not in first.attributes["exception.stacktrace"]
    assert "while importing order 42" in second.attributes["exception.stacktrace"]


def test_extra_keys_that_are_not_names_are_shipped_as_the_sdk_would(
    receiver: OTLPReceiver,
) -> None:
    """A non-string `extra` key is named by its str(), an empty one left out;
    the record itself always arrives."""
    telemetry = _init(receiver)
    log = showmax_otel.get_logger("catalogue")
    log.warning("int key", extra={1: "one"})
    log.warning("empty key", extra={"": "empty", "kept": "yes"})
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: len(r.logs()) >= 2, 5)
    records = {r.body: r.attributes for r in receiver.logs()}
    assert records["int key"]["1"] == "one"
    assert "" not in records["empty key"]
    assert records["empty key"]["kept"] == "yes"
    assert telemetry.stats()["logs"]["dropped"] == {}


def test_a_tiny_attribute_limit_is_never_exceeded(receiver: OTLPReceiver) -> None:
    """Below the length of the truncation mark, a value is cut to the limit."""
    telemetry = _init(receiver, max_attribute_bytes=20)
    showmax_otel.get_logger("catalogue").warning("x" * 100, extra={"note": "y" * 100})
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    (record,) = receiver.logs()
    assert record.body == "x" * 20
    assert record.attributes["note"] == "y" * 20


def test_the_console_exporters_print_every_record_and_span() -> None:
    """OTEL_LOGS_EXPORTER=console and OTEL_TRACES_EXPORTER=console print what
    was emitted, and nothing is counted as dropped."""
    result = _run_python(
        """
        import json
        import showmax_otel
        from opentelemetry import trace
        telemetry = showmax_otel.init_telemetry(
            service_name="console-tests", logs_exporter="console",
            traces_exporter="console",
        )
        with trace.get_tracer("tests").start_as_current_span("work"):
            showmax_otel.get_logger("app").warning("printed %d", 1)
        showmax_otel.get_logger("app").warning("printed %d", 2)
        assert telemetry.force_flush(5)
        print("STATS", json.dumps(telemetry.stats()))
        """
    )
    assert result.returncode == 0, result.stderr

    assert '"body": "printed 1"' in result.stdout
    assert '"body": "printed 2"' in result.stdout
    assert '"name": "work"' in result.stdout
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("STATS ")]
    stats = json.loads(line.removeprefix("STATS "))
    assert stats["logs"]["exported"] == 2
    assert stats["logs"]["dropped"] == {}
    assert stats["spans"]["exported"] == 1


def test_the_batch_export_time_limit_ends_an_export_the_collector_never_answers(
    receiver: OTLPReceiver,
) -> None:
    """OTEL_BLRP_EXPORT_TIMEOUT bounds the export of a batch even when one
    request may take longer (OTEL_EXPORTER_OTLP_TIMEOUT): the records are
    counted as failed instead of holding the export thread."""
    receiver.hold_responses(True)
    try:
        telemetry = _init(
            receiver,
            timeout_seconds=60,
            blrp_export_timeout_millis=300,
            traces_exporter="none",
        )
        for number in range(3):
            showmax_otel.get_logger("app").warning("held %d", number)
        # Well under the 60 s a request could take.
        telemetry.force_flush(20)
        logs = telemetry.stats()["logs"]
    finally:
        receiver.hold_responses(False)

    assert logs["dropped"] == {"export_failed": 3}
    assert logs["export_failures"] >= 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.11 API")
def test_a_large_exception_group_ships_no_marker_lines(receiver: OTLPReceiver) -> None:
    """Every sub-exception of a group, however many, loses its ^^^^ lines."""
    telemetry = _init(receiver)
    errors = []
    for number in range(1200):
        try:
            _lookup({"n": number})
        except KeyError as error:
            errors.append(error)
    try:
        raise ExceptionGroup("many lookups failed", errors)  # noqa: F821 - 3.11
    except ExceptionGroup:  # noqa: F821 - 3.11
        showmax_otel.get_logger("catalogue").exception("failed")
    assert telemetry.force_flush(5)

    assert receiver.wait_for(lambda r: r.logs(), 5)
    (record,) = receiver.logs()
    stack = record.attributes["exception.stacktrace"]
    assert 'return catalogue["missing"]' in stack
    for line in stack.splitlines():
        content = line.strip().lstrip("|").strip()
        assert not (content and set(content) <= set("^~")), line


class _Held:
    """A local of a failed call: alive only as long as its frame is."""


class _Rewrite(LogRecordProcessor):
    """An application's processor, added after the package's: it notes
    whether each record came with its request's span, and rewrites the body."""

    def __init__(self) -> None:
        self.span_ids: list[int] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        self.span_ids.append(
            trace.get_current_span(record.context).get_span_context().span_id
        )
        record.body = f"rewritten: {record.body}"

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_a_queued_record_holds_neither_its_request_span_nor_its_exception(
    receiver: OTLPReceiver,
) -> None:
    """Waiting for export, a record keeps the ids it ships, not the request.

    The context a record was emitted in holds the request's span, and an
    exception holds its traceback's frames with their locals: a queued
    record that kept them would keep them for the whole schedule delay.
    """
    telemetry = showmax_otel.init_telemetry(
        service_name="tests",
        endpoint=receiver.http_endpoint,
        blrp_schedule_delay_millis=60_000,
        bsp_schedule_delay_millis=60_000,
    )
    otel_logger = telemetry.logger_provider.get_logger("catalogue")
    rewrite = _Rewrite()
    telemetry.logger_provider.add_log_record_processor(rewrite)
    held: list[weakref.ref[_Held]] = []

    def fail() -> None:
        local = _Held()
        held.append(weakref.ref(local))
        raise ValueError("no such item")

    with trace.get_tracer("tests").start_as_current_span("request") as span:
        span_ref = weakref.ref(span)
        trace_id = span.get_span_context().trace_id
        span_id = span.get_span_context().span_id
        showmax_otel.get_logger("catalogue").warning("through the bridge")
        try:
            fail()
        except ValueError as error:
            otel_logger.emit(body="through the API", exception=error)
    del span
    gc.collect()

    # Processors added later saw each record whole, and what they changed
    # is what the queue took.
    assert rewrite.span_ids == [span_id, span_id]
    assert span_ref() is None, "a queued record keeps the request's span alive"
    assert held[0]() is None, "a queued record keeps the failed call's frame alive"
    assert telemetry.force_flush(5)
    assert receiver.wait_for(lambda r: len(r.logs()) == 2, 5)
    by_body = {record.body: record for record in receiver.logs()}
    assert {record.trace_id for record in by_body.values()} == {f"{trace_id:032x}"}
    exception_record = by_body["rewritten: through the API"]
    assert exception_record.attributes["exception.type"] == "ValueError"
    assert "rewritten: through the bridge" in by_body
