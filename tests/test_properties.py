"""Whatever an application logs, nothing raises and every record is accounted for.

Hypothesis draws messages, arguments, `extra` values of every type (bytes,
invalid UTF-8, lone surrogates, nested containers, objects with broken
`repr`, huge ints, None) and `exc_info` variants. After each example the
pipeline is flushed and the counts must add up: every record emitted was
exported (and is at the receiver) or counted as dropped with a reason.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from showmax_otel import Telemetry, init_telemetry
from showmax_otel.testing import OTLPReceiver

_WAIT_SECONDS = 20.0
_LOGGER_NAME = "tests.properties.app"
# Keys logging refuses in `extra` (it raises KeyError itself, by design).
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 60]


class _BrokenRepr:
    """An object whose repr and str raise, as some ORM objects do."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


_any_text = st.text(
    alphabet=st.characters(exclude_categories=()),  # lone surrogates included
    max_size=40,
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**300),
    st.integers(max_value=-(2**63) - 1, min_value=-(2**300)),
    st.floats(),
    st.complex_numbers(allow_nan=True),
    _any_text,
    st.binary(max_size=40),  # mostly invalid UTF-8
    st.builds(object),
    st.builds(_BrokenRepr),
    st.builds(ValueError, _any_text),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=8,
)
_extras = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda key: key not in _RESERVED),
    _values,
    max_size=5,
)


@st.composite
def _message_and_args(draw: st.DrawFn) -> tuple[Any, tuple[Any, ...]]:
    """A message with arguments it can be formatted with, or any object alone."""
    if draw(st.booleans()):
        args = tuple(draw(st.lists(_values.filter(_printable), max_size=4)))
        conversions = draw(
            st.lists(
                st.sampled_from(["%s", "%r"]), min_size=len(args), max_size=len(args)
            )
        )
        words = draw(
            st.lists(
                _any_text.map(lambda t: t.replace("%", "%%")),
                min_size=len(args) + 1,
                max_size=len(args) + 1,
            )
        )
        message = (
            "".join(w + c for w, c in zip(words, conversions, strict=False)) + words[-1]
        )
        # A single mapping argument is logging's named-format form; keep
        # the positional one.
        if len(args) == 1 and isinstance(args[0], dict):
            args = (str(args[0]),)
        return message, args
    return draw(_values.filter(_printable)), ()


def _printable(value: Any) -> bool:
    """Whether str() and repr() of it work (logging formats with them)."""
    try:
        str(value)
        repr(value)
    except Exception:
        return False
    return True


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def _chained() -> BaseException:
    try:
        try:
            raise KeyError("inner https://x/?token=t")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        return outer


_exc_info = st.one_of(
    st.none(),
    st.just(False),
    st.builds(_raised, st.builds(ValueError, _any_text)),
    st.builds(ValueError, _any_text),  # never raised: no traceback
    st.builds(lambda: _raised(_Unprintable())),
    st.builds(_chained),
    st.builds(lambda e: (type(e), e, e.__traceback__), st.builds(_chained)),
    st.just((None, None, None)),
)


def _init(receiver: OTLPReceiver) -> Telemetry:
    logging.getLogger(_LOGGER_NAME).setLevel(logging.DEBUG)
    return init_telemetry(
        endpoint=receiver.http_endpoint,
        traces_exporter="none",
        blrp_max_queue_size=100_000,
    )


def _assert_accounted_for(telemetry: Telemetry, receiver: OTLPReceiver) -> None:
    telemetry.force_flush(_WAIT_SECONDS)
    stats = telemetry.stats()["logs"]
    assert stats["queued"] == 0
    assert stats["emitted"] == stats["exported"] + sum(stats["dropped"].values())
    assert set(stats["dropped"]) <= {"unencodable"}
    assert receiver.wait_for(
        lambda r: len(r.logs()) == stats["exported"], _WAIT_SECONDS
    ), (len(receiver.logs()), stats)
    assert telemetry.stats()["internal_errors"] == 0


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    records=st.lists(
        st.tuples(
            _message_and_args(),
            _extras,
            _exc_info,
            st.sampled_from(_LEVELS),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_anything_an_application_logs_is_exported_or_counted(
    receiver: OTLPReceiver, records: list[Any]
) -> None:
    """Arbitrary records never raise, and each is exported or counted as dropped."""
    telemetry = _init(receiver)
    logger = logging.getLogger(_LOGGER_NAME)
    emitted_before = telemetry.stats()["logs"]["emitted"]

    for (message, args), extra, exc_info, level, stack_info in records:
        logger.log(
            level, message, *args, extra=extra, exc_info=exc_info, stack_info=stack_info
        )

    assert telemetry.stats()["logs"]["emitted"] == emitted_before + len(records)
    _assert_accounted_for(telemetry, receiver)


def test_records_from_many_threads_at_once_are_all_accounted_for(
    receiver: OTLPReceiver,
) -> None:
    """Eight threads logging odd values at once: no error, every record counted."""
    telemetry = _init(receiver)
    logger = logging.getLogger(_LOGGER_NAME)
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    odd_values: list[Any] = [
        b"\xff\xfe\x00",
        2**200,
        None,
        {"nested": [1, (2, b"3")]},
        _BrokenRepr(),
        "surrogate \udcff",
        float("nan"),
        object(),
    ]

    def work(number: int) -> None:
        try:
            start.wait(10)
            for i in range(300):
                value = odd_values[(number + i) % len(odd_values)]
                logger.warning("thread %d record %d", number, i, extra={"value": value})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert telemetry.stats()["logs"]["emitted"] == 8 * 300
    _assert_accounted_for(telemetry, receiver)


@pytest.mark.slow
def test_records_from_many_greenlets_at_once_are_all_accounted_for(
    receiver: OTLPReceiver,
) -> None:
    """Fifty greenlets in a patched process: no error, every record counted."""
    script = textwrap.dedent(
        f"""
        from gevent import monkey

        monkey.patch_all()

        import json
        import logging

        import gevent

        from showmax_otel import init_telemetry, shutdown_telemetry

        telemetry = init_telemetry(
            endpoint={receiver.http_endpoint!r},
            traces_exporter="none",
            blrp_max_queue_size=100_000,
        )
        logger = logging.getLogger("greenlets")
        values = [b"\\xff", 2**100, None, {{"a": [1, b"2"]}}, "x" * 10_000, object()]
        errors = []

        def work(number):
            try:
                for i in range(40):
                    value = values[(number + i) % len(values)]
                    extra = {{"v": value}}
                    logger.warning("greenlet %d record %d", number, i, extra=extra)
                    if i % 10 == 0:
                        gevent.sleep(0)
            except BaseException as error:
                errors.append(repr(error))

        gevent.joinall([gevent.spawn(work, n) for n in range(50)], timeout=60)
        shutdown_telemetry(20)
        print(json.dumps({{"errors": errors, "stats": telemetry.stats()["logs"]}}))
        """
    )
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHOWMAX_"))
    }
    environment["SHOWMAX_OTEL_RAISE_INTERNAL_ERRORS"] = "true"
    finished = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    stats = result["stats"]

    assert result["errors"] == []
    assert stats["emitted"] == 50 * 40
    assert stats["emitted"] == stats["exported"] + sum(stats["dropped"].values())
    assert receiver.wait_for(
        lambda r: len(r.logs()) == stats["exported"], _WAIT_SECONDS
    )
    assert stats["exported"] == 50 * 40


@pytest.mark.parametrize(
    ("message", "args"),
    [
        pytest.param("%d items", ("many",), id="wrong-type"),
        pytest.param("%s and %s", ("one",), id="too-few-args"),
        pytest.param(_BrokenRepr(), (), id="message-without-str"),
    ],
)
def test_a_log_call_whose_format_fails_never_raises(
    receiver: OTLPReceiver, message: Any, args: tuple[Any, ...]
) -> None:
    """A record whose message cannot be formatted is still shipped, never raised."""
    # pytest's own capture handler on the root re-raises format errors, so
    # this logger reaches only the bridge, as a listed non-propagating one.
    logger = logging.getLogger(f"{_LOGGER_NAME}.isolated")
    logger.propagate = False
    telemetry = init_telemetry(
        endpoint=receiver.http_endpoint,
        traces_exporter="none",
        bridge_loggers=[logger.name],
    )

    try:
        logger.warning(message, *args)
    finally:
        logger.propagate = True

    _assert_accounted_for(telemetry, receiver)
    assert telemetry.stats()["logs"]["exported"] == 1
