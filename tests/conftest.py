"""Shared fixtures: a clean telemetry state per test and a real receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from showmax_otel import _state
from showmax_otel.testing import OTLPReceiver, reset_telemetry


@pytest.fixture(autouse=True)
def clean_telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no pipeline, no OTEL_* settings, strict errors."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SHOWMAX_OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOWMAX_OTEL_RAISE_INTERNAL_ERRORS", "true")
    reset_telemetry()
    yield
    # Internal errors on the export thread cannot raise into the test; they
    # are counted, and a count left at the end fails the test here.
    telemetry = _state.current()
    errors = telemetry.stats()["internal_errors"] if telemetry else 0
    reset_telemetry()
    if errors:
        pytest.fail(
            f"showmax_otel counted {errors} internal error(s) in this test",
            pytrace=False,
        )


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """A real OTLP receiver (HTTP and gRPC) on 127.0.0.1, free ports."""
    with OTLPReceiver() as running:
        yield running
