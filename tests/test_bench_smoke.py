"""The benchmark harness runs end to end on one tiny cell and writes its results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.servers]

CELL_KEYS = {
    "server",
    "mode",
    "condition",
    "rounds",
    "rps",
    "cpu_us_per_request",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "hub_lag_ms",
    "records_sent",
    "records_lost",
    "spans_sent",
    "spans_lost",
    "rss_mib",
    "stop_seconds",
    "rps_x_bare",
    "p99_x_bare",
}


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)"
)
def test_one_tiny_cell_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    """bare and showmax on uWSGI with a fast collector produce every result file."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--servers",
            "uwsgi",
            "--modes",
            "bare,showmax",
            "--conditions",
            "fast",
            "--reps",
            "1",
            "--seconds",
            "1",
            "--rate",
            "100",
            "--no-micro",
            "--no-pin",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == []
    cells = {(cell["mode"], cell["condition"]): cell for cell in results["cells"]}
    assert set(cells) == {("bare", "fast"), ("showmax", "fast")}
    for cell in cells.values():
        assert set(cell) >= CELL_KEYS
        assert cell["rps"]["median"] > 0
        assert cell["p99_ms"]["median"] > 0
    assert cells["showmax", "fast"]["records_sent"] > 0
    assert cells["bare", "fast"]["records_sent"] == 0
    assert "| uwsgi | showmax | fast |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 0


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)"
)
def test_the_cost_of_a_setting_is_measured_both_ways() -> None:
    """bench.cpu serves the mode with and without the setting and prints both."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cpu",
            "showmax",
            "--set",
            "SHOWMAX_OTEL_HUB_BLOCK_THRESHOLD_MILLIS=0",
            "--seconds",
            "1",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    medians = [line for line in done.stdout.splitlines() if ": median " in line]
    assert len(medians) == 2, done.stdout
    assert "as it is" in medians[0]
    assert "SHOWMAX_OTEL_HUB_BLOCK_THRESHOLD_MILLIS=0" in medians[1]
    for line in medians:
        value = float(line.split(": median ")[1].split()[0])
        assert value > 0


def test_a_stop_waits_for_the_worker_that_replaced_a_dead_one(tmp_path: Path) -> None:
    """The worker a stop waits for is the one serving then, so its exit flush ships."""
    from bench import run as bench_run

    collector = bench_run.CollectorProcess(None)
    try:
        endpoint = f"http://127.0.0.1:{collector.http_port}"
        with bench_run.running_server(
            "gunicorn", "showmax", endpoint, tmp_path / "server.log", 7.0, None
        ) as facts:
            port, first = facts["port"], facts["worker_pid"]
            os.kill(first, signal.SIGKILL)
            stats = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = bench_run._try_stats(port)
                if stats is not None and stats["pid"] != first:
                    break
                time.sleep(0.1)
            assert stats is not None and stats["pid"] != first, "no new worker"
            collector.command("reset")
            for _ in range(20):
                url = f"http://127.0.0.1:{port}/items"
                urllib.request.urlopen(url, timeout=5).close()
            # Everything the new worker served, its own stats requests included.
            served = bench_run._get_json(port, "/_bench/stats")["requests"]

        assert not facts["stop"]["killed"], facts["stop"]
        assert served >= 20
        # What the new worker queued ships only at its exit.
        deadline = time.monotonic() + 10
        counts = collector.command("counts")
        while counts["logs"] < served and time.monotonic() < deadline:
            time.sleep(0.05)
            counts = collector.command("counts")
        assert (counts["logs"], counts["spans"]) == (served, served)
    finally:
        collector.close()
