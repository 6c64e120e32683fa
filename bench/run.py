"""The benchmark run: every mode, collector condition and server, interleaved.

`python -m bench` (see bench/README.md) measures, for each cell (server x
mode x collector condition), in one server lifetime:

1. a warm-up of a few dozen requests of every kind (at most a second);
2. the fixed-rate phase: bench/loadgen.py at about half of bare's capacity,
   for latency (p50, p99, max) and the hub probe's longest lateness;
3. the saturation phase: wrk with bench/mix.lua, for requests/s and the
   server CPU spent per request;
4. a stop with SIGTERM (graceful on gunicorn; uWSGI with --die-on-term
   ends its worker at once), timed until the worker has exited and
   bounded; then what the collector received against what the app wrote,
   shutdown included.

Cells run round after round (`--reps`), so that drift on a shared machine
spreads over every mode rather than landing on one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.modes import CONDITIONS, MODES, SERVERS

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent

WRK_MISSING = (
    "wrk is not installed; on Debian or Ubuntu: "
    "apt-get update && apt-get install -y wrk"
)


@dataclass
class Plan:
    """Durations and shape of one run; the defaults take about 15 minutes on 2 cores.

    What a run costs is mostly per cell (a server's start takes 0.6-0.8 s,
    and on gunicorn a graceful stop about 1 s, whatever the phases last), so
    shorter phases buy little; fewer servers, conditions or rounds buy more.
    """

    servers: tuple[str, ...] = SERVERS
    modes: tuple[str, ...] = tuple(MODES)
    conditions: tuple[str, ...] = CONDITIONS
    reps: int = 3
    # The calibration's wrk warm-up; wrk counts time in whole seconds.
    warmup_seconds: float = 1.0
    rate_seconds: float = 1.0
    saturation_seconds: float = 1.0
    # naive-dup gets slower with every request; a short cell shows it.
    dup_seconds: float = 1.0
    calibration_seconds: float = 3.0
    connections: int = 32
    rate_fraction: float = 0.5
    # How long a stopping server may take before it is killed; above
    # showmax_otel's own 5 s default bound, so that bound is what shows.
    stop_wait_seconds: float = 7.0
    # Limitation: later rounds do not wait out a dead collector again, so a
    # shutdown time with a dead collector is the first round's alone; the
    # others kill sooner to keep the run short.
    stop_wait_later_seconds: float = 1.5
    # Requests/s of the fixed-rate phase; None: a fraction of bare's capacity,
    # measured first on each server.
    fixed_rate: float | None = None
    server_cpu: int | None = 0
    load_cpu: int | None = 1
    micro: bool = True


def quick_plan() -> Plan:
    """A one-to-two-minute smoke run: every mode, uWSGI only, fewer conditions."""
    return Plan(
        servers=("uwsgi",),
        conditions=("fast", "slow"),
        reps=1,
        warmup_seconds=1.0,
        rate_seconds=1.0,
        saturation_seconds=1.0,
        dup_seconds=1.0,
        calibration_seconds=1.5,
        micro=False,
    )


# -- processes ---------------------------------------------------------------


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CollectorProcess:
    """bench/collector.py in its own process, driven over stdin/stdout."""

    def __init__(self, cpu: int | None) -> None:
        self._process = subprocess.Popen(
            _pinned([sys.executable, "-m", "bench.collector"], cpu),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_clean_env(),
        )
        ports = self._read()
        self.http_port = int(ports["http_port"])
        self.grpc_port = int(ports["grpc_port"])

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the collector stand-in exited; see its stderr above")
        answer: dict[str, Any] = json.loads(line)

        return answer

    def command(self, text: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(text + "\n")
        self._process.stdin.flush()

        return self._read()

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        if self._process.stdout is not None:
            self._process.stdout.close()


def _clean_env() -> dict[str, str]:
    """This environment without any telemetry settings of the caller's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])

    return env


def server_command(
    server: str, port: int, launcher: str, stop_wait: float
) -> list[str]:
    """The command line of one server with one gevent worker."""
    mercy = str(max(1, int(stop_wait)))
    if server == "uwsgi":
        command = [
            str(VENV_BIN / "uwsgi"),
            # Limitation: uWSGI serves one request per connection here (gunicorn
            # keeps connections alive), so its figures include a TCP handshake
            # per request: uWSGI 2.0's keep-alive socket (--http11-socket)
            # crashes its gevent loop with gevent 26. The header lets the
            # clients reconnect without counting an error.
            "--http-socket",
            f"127.0.0.1:{port}",
            "--add-header",
            "Connection: close",
            "--module",
            "bench.app:app",
            "--master",
            "--processes",
            "1",
            "--gevent",
            "1000",
            "--gevent-early-monkey-patch",
            "--enable-threads",
            "--lazy-apps",
            "--need-app",
            "--die-on-term",
            "--listen",
            "1024",
            "--disable-logging",
            "--worker-reload-mercy",
            mercy,
        ]
    elif server == "gunicorn":
        command = [
            str(VENV_BIN / "gunicorn"),
            "--worker-class",
            "gevent",
            "--workers",
            "1",
            "--worker-connections",
            "1000",
            "--bind",
            f"127.0.0.1:{port}",
            "--backlog",
            "1024",
            "--graceful-timeout",
            mercy,
            "bench.app:app",
        ]
    else:
        raise ValueError(f"unknown server {server!r}; expected one of {SERVERS}")
    if launcher == "instrument":
        command = [str(VENV_BIN / "opentelemetry-instrument"), *command]

    return command


def _get_json(port: int, path: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        answer: dict[str, Any] = json.loads(r.read())

    return answer


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _process_tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(processes: list[Any]) -> float:
    import psutil

    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system

    return total


def _run_wrk(
    port: int, seconds: float, connections: int, cpu: int | None
) -> dict[str, Any]:
    command = _pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "mix.lua"),
            f"http://127.0.0.1:{port}",
        ],
        cpu,
    )
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk printed no result: {done.stdout}{done.stderr}")


def _try_stats(port: int, reset_probe: bool = False) -> dict[str, Any] | None:
    path = "/_bench/stats" + ("?reset_probe=1" if reset_probe else "")
    try:
        return _get_json(port, path, timeout=1)
    except OSError:
        return None


def _quiesce(port: int, deadline_seconds: float = 5.0) -> dict[str, Any] | None:
    """The worker's counters once it has finished what the load left queued.

    Idle means that only our own stats request arrived between two reads.
    None when the worker is still busy at the deadline.
    """
    deadline = time.monotonic() + deadline_seconds
    previous = _try_stats(port)
    while time.monotonic() < deadline:
        # Short enough not to dominate a cell; long enough that a worker
        # still answering queued requests (thousands a second, or dozens
        # when each waits on a slow collector) completes more than one.
        time.sleep(0.05)
        current = _try_stats(port)
        if (
            previous is not None
            and current is not None
            and current["requests"] - previous["requests"] <= 1
        ):
            return current
        previous = current

    return None


def _warm_up(port: int) -> None:
    """A few requests of every kind: imports, first exports and caches happen here."""
    from bench.loadgen import route_sequence

    deadline = time.monotonic() + 1.0
    for path in ["/fail", *route_sequence(40, seed=7)]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # A mode whose requests wait on the collector is warm enough.
            return
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}{path}", timeout=remaining
            ):
                pass
        except urllib.error.HTTPError:
            # The failing route answers 500 on purpose.
            continue
        except OSError:
            # A mode that cannot keep up even here is measured all the same.
            return


def _run_loadgen(
    port: int, rate: float, seconds: float, cpu: int | None
) -> dict[str, Any]:
    command = _pinned(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--rate",
            f"{rate:.1f}",
            "--seconds",
            str(seconds),
        ],
        cpu,
    )
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=seconds + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])

    return result


@contextlib.contextmanager
def running_server(
    server: str,
    mode_name: str,
    endpoint: str | None,
    log_path: Path,
    stop_wait: float,
    cpu: int | None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Start one server, yield facts about it; stop it gracefully, timed, on exit."""
    mode = MODES[mode_name]
    port = _free_port()
    env = _clean_env()
    env.update(
        {
            "BENCH_MODE": mode.name,
            "OTEL_SERVICE_NAME": "bench-catalogue",
        }
    )
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(dict(mode.env))
    env.update(extra_env or {})
    # The server's own grace period is always the full one: the harness
    # decides when to stop waiting.
    command = _pinned(
        server_command(server, port, mode.launcher, Plan.stop_wait_seconds), cpu
    )
    facts: dict[str, Any] = {"port": port, "command": command}
    log = log_path.open("w")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Ready when the port accepts and the app answers; the answer may take
        # as long as the mode's telemetry makes a request take.
        deadline = started + 60
        while not _accepts(port):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{server} exited with {process.returncode} at start; "
                    f"see {log_path}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not listen in 60 s; see {log_path}")
            time.sleep(0.05)
        try:
            stats = _get_json(port, "/_bench/stats", timeout=30)
        except OSError as error:
            raise RuntimeError(
                f"{server} did not answer: {error}; see {log_path}"
            ) from None
        facts["start_seconds"] = time.monotonic() - started
        facts["worker_pid"] = stats["pid"]
        facts["server_pid"] = process.pid
        yield facts
    finally:
        facts["stop"] = _stop(process, facts.get("stop_wait", stop_wait))
        log.close()


def _exited(worker: Any) -> bool:
    """Whether a process has exited (a zombie its parent has not reaped counts)."""
    import psutil

    try:
        return bool(worker.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _stop(process: subprocess.Popen[bytes], wait_seconds: float) -> dict[str, Any]:
    """SIGTERM the server; the time until its workers have exited, bounded.

    The workers are what serve and ship telemetry, so their exit is the end
    of the shutdown being measured. They are the master's children when the
    signal goes, a respawned one included. The master then has nothing left
    to do but notice, and uWSGI's takes a second of its own polling to,
    whatever the mode: it is killed rather than waited for. A master with no
    worker is waited for itself.
    """
    import psutil

    if process.poll() is not None:
        return {"seconds": 0.0, "killed": False, "master_exit": process.returncode}
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    started = time.monotonic()
    deadline = started + wait_seconds
    process.send_signal(signal.SIGTERM)
    if workers:
        while time.monotonic() < deadline and not all(map(_exited, workers)):
            time.sleep(0.01)
        killed = not all(map(_exited, workers))
    else:
        try:
            process.wait(wait_seconds)
            killed = False
        except subprocess.TimeoutExpired:
            killed = True
    seconds = time.monotonic() - started
    if process.poll() is None:
        # The whole session: the master, and any worker that overstayed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    for worker in workers:
        # Orphans go to whoever adopts them; if that is this process (PID 1
        # of a container), they are reaped here rather than left as zombies.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(worker.pid, os.WNOHANG)

    return {"seconds": seconds, "killed": killed, "master_exit": process.returncode}


# -- one cell ----------------------------------------------------------------


def _endpoint(
    mode_name: str, condition: str, collector: CollectorProcess, dead_port: int
) -> str | None:
    mode = MODES[mode_name]
    if mode.protocol is None:
        return None
    if condition == "down":
        return f"http://127.0.0.1:{dead_port}"
    port = collector.grpc_port if mode.protocol == "grpc" else collector.http_port

    return f"http://127.0.0.1:{port}"


def _settle(
    collector: CollectorProcess, expected: int, condition: str
) -> dict[str, Any]:
    """Wait until the collector has what was sent or stops receiving."""
    deadline = time.monotonic() + (0.3 if condition in ("down", "blackhole") else 3.0)
    last: dict[str, Any] = collector.command("counts")
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        if last["spans"] + last["logs"] >= expected:
            break
        time.sleep(0.05)
        counts = collector.command("counts")
        if counts != last:
            last, still_since = counts, time.monotonic()
        elif time.monotonic() - still_since > 0.4:
            break

    return last


class _Laps:
    """The seconds each phase of a cell took, kept in the cell as it goes."""

    def __init__(self, cell: dict[str, Any]) -> None:
        self.seconds: dict[str, float] = {}
        cell["phase_seconds"] = self.seconds
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = now - self._last
        self._last = now


def run_cell(
    plan: Plan,
    server: str,
    mode_name: str,
    condition: str,
    rate: float,
    collector: CollectorProcess,
    dead_port: int,
    log_dir: Path,
    stop_wait: float,
) -> dict[str, Any]:
    """One server lifetime: warm-up, fixed rate, saturation, stop, count."""
    import psutil

    mode = MODES[mode_name]
    collector.command("behave " + ("fast" if condition == "down" else condition))
    collector.command("reset")
    endpoint = _endpoint(mode_name, condition, collector, dead_port)
    cell: dict[str, Any] = {"server": server, "mode": mode_name, "condition": condition}
    short = mode_name == "naive-dup"
    rate_seconds = plan.dup_seconds if short else plan.rate_seconds
    saturation_seconds = plan.dup_seconds if short else plan.saturation_seconds
    log_path = log_dir / f"{server}-{mode_name}-{condition}.log"

    started = time.monotonic()
    laps = _Laps(cell)
    with running_server(
        server, mode_name, endpoint, log_path, stop_wait, plan.server_cpu
    ) as facts:
        port = facts["port"]
        laps.lap("start")
        _warm_up(port)
        laps.lap("warm_up")

        _try_stats(port, reset_probe=True)
        cell["fixed_rate"] = _run_loadgen(port, rate, rate_seconds, plan.load_cpu)
        laps.lap("fixed_rate")
        after_rate = _quiesce(port, 1.5)
        laps.lap("quiesce_after_rate")
        cell["fixed_rate"]["probe_max_lag_ms"] = (
            after_rate["probe_max_lag_ms"] if after_rate else None
        )
        if after_rate is not None:
            # A stuck worker would answer only after its backlog, at no
            # telling when: its probe's lateness is not split between phases.
            _try_stats(port, reset_probe=True)

        processes = _process_tree(facts["server_pid"])
        cpu_before = _cpu_seconds(processes)
        saturation = _run_wrk(port, saturation_seconds, plan.connections, plan.load_cpu)
        cpu_after = _cpu_seconds(processes)
        laps.lap("saturation")
        # A worker that was still busy after the first phase gets less time.
        stats = _quiesce(port, 5.0 if after_rate is not None else 1.0)
        laps.lap("quiesce_after_saturation")
        for answer in (after_rate, stats):
            if answer is not None and answer["pid"] != facts["worker_pid"]:
                # Its counters started again from zero: nothing adds up.
                raise RuntimeError(
                    f"{server}'s worker {facts['worker_pid']} was replaced by "
                    f"{answer['pid']} during the cell; see {log_path}"
                )
        saturation["probe_max_lag_ms"] = (
            stats["probe_max_lag_ms"] if stats and after_rate else None
        )
        saturation["cpu_seconds"] = cpu_after - cpu_before
        saturation["cpu_us_per_request"] = (
            (cpu_after - cpu_before) / saturation["requests"] * 1e6
            if saturation["requests"]
            else None
        )
        cell["saturation"] = saturation
        with contextlib.suppress(psutil.Error):
            cell["worker_rss_mib"] = (
                psutil.Process(facts["worker_pid"]).memory_info().rss / 2**20
            )
        cell["start_seconds"] = facts["start_seconds"]
        if stats is None:
            # Still working through a backlog it cannot finish: what it wrote
            # is unknowable, and a graceful stop would only wait for it.
            facts["stop_wait"] = 0.5
    laps.lap("stop")
    cell["stop"] = facts["stop"]
    cell["unresponsive"] = stats is None

    # bare writes its records to no collector: nothing is sent, nothing lost.
    ships = mode.protocol is not None
    if stats is None:
        received = collector.command("counts")
        cell["records"] = {
            "sent": None,
            "received": received["logs"],
            "lost": None,
            "duplicates": None,
            "other_received": received["other_logs"],
        }
        cell["spans"] = {"sent": None, "received": received["spans"], "lost": None}
        cell["collector"] = received
        cell["cell_seconds"] = time.monotonic() - started
        return cell
    sent_records = stats["requests"] + stats["failures"] if ships else 0
    sent_spans = stats["requests"] if mode.emits_spans else 0
    received = _settle(collector, sent_records + sent_spans, condition)
    laps.lap("settle")
    cell["records"] = {
        "sent": sent_records,
        "received": received["logs"],
        "lost": max(0, sent_records - received["logs"]),
        "duplicates": max(0, received["logs"] - sent_records),
        "other_received": received["other_logs"],
    }
    cell["spans"] = {
        "sent": sent_spans,
        "received": received["spans"],
        "lost": max(0, sent_spans - received["spans"]),
    }
    cell["collector"] = received
    cell["cell_seconds"] = time.monotonic() - started

    return cell


# -- the run -----------------------------------------------------------------


def calibrate(
    plan: Plan, server: str, collector: CollectorProcess, dead_port: int, log_dir: Path
) -> float:
    """Bare's capacity on this server, in requests/s."""
    with running_server(
        server,
        "bare",
        None,
        log_dir / f"{server}-calibration.log",
        plan.stop_wait_later_seconds,
        plan.server_cpu,
    ) as facts:
        _run_wrk(facts["port"], plan.warmup_seconds, plan.connections, plan.load_cpu)
        result = _run_wrk(
            facts["port"], plan.calibration_seconds, plan.connections, plan.load_cpu
        )
    capacity: float = result["rps"]

    return capacity


def cells(plan: Plan) -> list[tuple[str, str, str]]:
    """Every (server, mode, condition) the plan runs."""
    chosen = []
    for server in plan.servers:
        for condition in plan.conditions:
            for mode_name in plan.modes:
                allowed = MODES[mode_name].conditions
                if allowed is not None and condition not in allowed:
                    continue
                chosen.append((server, mode_name, condition))

    return chosen


def _compile_sources() -> None:
    """Byte-compile the package and the app once, before any server starts.

    Where PYTHONDONTWRITEBYTECODE is set (some CI images set it), nothing
    imported from the working tree is ever cached, and each server would
    compile them again at start.
    """
    import compileall

    for folder in ("showmax_otel", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def run(plan: Plan, out_dir: Path, log: Any = print) -> dict[str, Any]:
    """Run the whole plan; return (and write) the raw results."""
    _compile_sources()
    log_dir = out_dir / "raw"
    log_dir.mkdir(parents=True, exist_ok=True)
    raw_path = log_dir / "runs.json"
    started = time.monotonic()
    collector = CollectorProcess(plan.load_cpu)
    dead_port = _free_port()
    results: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": _machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "capacity_rps": {},
        "rate_rps": {},
        "runs": [],
        "failed": [],
    }
    try:
        for server in plan.servers:
            if plan.fixed_rate is not None:
                results["capacity_rps"][server] = None
                results["rate_rps"][server] = plan.fixed_rate
                continue
            capacity = calibrate(plan, server, collector, dead_port, log_dir)
            results["capacity_rps"][server] = capacity
            results["rate_rps"][server] = round(capacity * plan.rate_fraction)
            log(
                f"{server}: bare capacity {capacity:.0f} req/s; fixed rate "
                f"{results['rate_rps'][server]} req/s"
            )

        todo = cells(plan)
        for rep in range(plan.reps):
            # Rotate the order each round so that no mode always runs first.
            shift = rep * 3 % len(todo)
            for server, mode_name, condition in todo[shift:] + todo[:shift]:
                # Only a dead collector makes a stop slow; a healthy one must
                # always get the time to flush, or losses would be ours.
                dead = condition in ("down", "blackhole")
                stop_wait = (
                    plan.stop_wait_later_seconds
                    if rep > 0 and dead
                    else plan.stop_wait_seconds
                )
                try:
                    cell = run_cell(
                        plan,
                        server,
                        mode_name,
                        condition,
                        results["rate_rps"][server],
                        collector,
                        dead_port,
                        log_dir,
                        stop_wait,
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                    results["failed"].append(
                        {
                            "server": server,
                            "mode": mode_name,
                            "condition": condition,
                            "rep": rep,
                            "error": str(error),
                        }
                    )
                    log(f"  {server:8} {mode_name:18} {condition:9} FAILED: {error}")
                    continue
                cell["rep"] = rep
                results["runs"].append(cell)
                log(_one_line(cell))
                # Kept as it goes, so that an interrupted run still has data.
                raw_path.write_text(json.dumps(results))
    finally:
        collector.close()
    results["wall_seconds"] = time.monotonic() - started
    raw_path.write_text(json.dumps(results, indent=1))

    return results


def _one_line(cell: dict[str, Any]) -> str:
    saturation, fixed = cell["saturation"], cell["fixed_rate"]
    cpu = saturation.get("cpu_us_per_request") or 0
    lag = fixed["probe_max_lag_ms"]
    lag_text = "  busy" if lag is None else f"{lag:6.1f}"
    killed = " killed" if cell["stop"]["killed"] else ""

    return (
        f"  {cell['server']:8} {cell['mode']:18} {cell['condition']:9} "
        f"{saturation['rps']:7.0f} req/s {cpu:6.0f} us/req | "
        f"p99 {fixed['latency_ms']['p99']:8.1f} ms lag {lag_text} ms | "
        f"lost {cell['records']['lost']}/{cell['records']['sent']} rec "
        f"{cell['spans']['lost']}/{cell['spans']['sent']} spans | "
        f"stop {cell['stop']['seconds']:.1f}s{killed}"
        f" | start {cell['start_seconds']:.1f}s cell {cell['cell_seconds']:.1f}s"
    )


def _machine() -> dict[str, Any]:
    import platform

    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": load,
    }


def run_micro(out_dir: Path) -> dict[str, Any]:
    """The request-path micro-benchmarks (pytest-benchmark), summarised."""
    raw = out_dir / "raw" / "micro.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(BENCH / "test_micro.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            # pytest's log capture puts handlers on the root logger, which
            # the package's records reach and the hand-written set-up's do not.
            "-p",
            "no:logging",
            "--benchmark-json",
            str(raw),
            "--benchmark-min-rounds",
            "5",
            "--benchmark-max-time",
            "0.5",
            "-o",
            "addopts=",
            "-W",
            "ignore::DeprecationWarning",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=False,
        timeout=600,
    )
    if not raw.exists():
        return {"error": (done.stdout + done.stderr)[-2000:]}
    data = json.loads(raw.read_text())

    summary: dict[str, Any] = {}
    for bench in data["benchmarks"]:
        # A batch benchmark is reported per item, as the export worker pays it.
        items = bench.get("extra_info", {}).get("items", 1)
        name = bench["name"] + (f" per item of {items}" if items != 1 else "")
        summary[name] = {
            "median_us": bench["stats"]["median"] * 1e6 / items,
            "min_us": bench["stats"]["min"] * 1e6 / items,
            "iqr_us": bench["stats"]["iqr"] * 1e6 / items,
            "rounds": bench["stats"]["rounds"],
        }

    return summary


def run_faults() -> dict[str, Any]:
    """bench/faults.py's figures (spool cost, memory in an outage), when present."""
    try:
        from bench import faults
    except ImportError as error:
        return {"error": f"bench.faults is not available: {error}"}
    figures: dict[str, Any] = {}
    calls = {
        "spool": lambda: faults.spool_cost_per_record(),
        "outage_hung": lambda: faults.rss_during_outage(5.0, collector="hung"),
        "outage_refused_with_spool": lambda: faults.rss_during_outage(
            5.0, collector="refused", spool=True
        ),
    }
    for name, call in calls.items():
        try:
            figures[name] = call()
        except Exception as error:  # noqa: BLE001 - reported in the results
            figures[name] = {"error": repr(error)}

    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="What telemetry costs a request: every mode, every collector "
        "condition, uWSGI and gunicorn, in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 1-2 minute smoke run (uWSGI, fast and slow, 1 round)",
    )
    parser.add_argument("--reps", type=int, help="rounds (default 3)")
    parser.add_argument("--servers", help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--modes", help="comma-separated: " + ",".join(MODES))
    parser.add_argument("--conditions", help="comma-separated: " + ",".join(CONDITIONS))
    parser.add_argument(
        "--seconds", type=float, help="length of each fixed-rate and saturation phase"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="fixed rate in requests/s (default: half of bare's measured capacity)",
    )
    parser.add_argument(
        "--no-micro", action="store_true", help="skip the micro-benchmarks"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and the load to separate cores",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH / "results",
        help="where results.json, results.md and results.png go",
    )
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2

    plan = quick_plan() if args.quick else Plan()
    for name, known in (
        ("servers", SERVERS),
        ("modes", tuple(MODES)),
        ("conditions", CONDITIONS),
    ):
        value = getattr(args, name)
        if value:
            chosen = tuple(part.strip() for part in value.split(",") if part.strip())
            unknown = [part for part in chosen if part not in known]
            if unknown:
                parser.error(
                    f"--{name}: unknown {unknown}; accepted: {', '.join(known)}"
                )
            setattr(plan, name, chosen)
    if args.reps is not None:
        if args.reps < 1:
            parser.error(f"--reps must be at least 1, got {args.reps}")
        plan.reps = args.reps
    if args.seconds is not None:
        if args.seconds <= 0:
            parser.error(f"--seconds must be positive, got {args.seconds}")
        plan.rate_seconds = plan.saturation_seconds = args.seconds
        plan.dup_seconds = min(plan.dup_seconds, args.seconds)
    if args.rate is not None:
        if args.rate <= 0:
            parser.error(f"--rate must be positive, got {args.rate}")
        plan.fixed_rate = args.rate
    if args.no_micro:
        plan.micro = False
    if args.no_pin or (os.cpu_count() or 1) < 2:
        plan.server_cpu = plan.load_cpu = None

    from bench import report

    results = run(plan, args.out)
    if plan.micro:
        print("micro-benchmarks ...", flush=True)
        results["micro"] = run_micro(args.out)
        print("fault figures ...", flush=True)
        results["faults"] = run_faults()
    summary = report.write_all(results, args.out)
    print(summary["markdown"])
    print(
        f"wrote {args.out}/results.json, results.md, results.png "
        f"in {results['wall_seconds']:.0f} s"
    )

    return 0
