"""Turn the raw runs into medians, ratios, targets, a Markdown table and a plot.

`python -m bench.report [results/raw/runs.json]` redraws from saved runs.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.modes import CONDITIONS, MODES

__all__ = ["aggregate", "markdown", "targets", "write_all"]

# showmax_otel's default shutdown bound, plus the time a process takes to exit.
SHUTDOWN_BOUND_SECONDS = 5.0
SHUTDOWN_SLACK_SECONDS = 1.5
SHOWMAX_MODES = ("showmax", "showmax-instrument")
DEAD = ("down", "blackhole")


def _spread(values: list[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def aggregate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (server, mode, condition): medians with min and max over rounds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in results["runs"]:
        groups.setdefault((run["server"], run["mode"], run["condition"]), []).append(
            run
        )

    rows = []
    for (server, mode, condition), runs in groups.items():
        first_round = [r for r in runs if r["rep"] == min(x["rep"] for x in runs)]
        rows.append(
            {
                "server": server,
                "mode": mode,
                "condition": condition,
                "rounds": len(runs),
                "rps": _spread([r["saturation"]["rps"] for r in runs]),
                "cpu_us_per_request": _spread(
                    [r["saturation"]["cpu_us_per_request"] for r in runs]
                ),
                "saturation_p99_ms": _spread(
                    [r["saturation"]["latency_ms"]["p99"] for r in runs]
                ),
                "p50_ms": _spread([r["fixed_rate"]["latency_ms"]["p50"] for r in runs]),
                "p99_ms": _spread([r["fixed_rate"]["latency_ms"]["p99"] for r in runs]),
                "max_ms": _spread([r["fixed_rate"]["latency_ms"]["max"] for r in runs]),
                "achieved_rate": _spread(
                    [r["fixed_rate"]["achieved_rate"] for r in runs]
                ),
                "unfinished": sum(
                    r["fixed_rate"]["unfinished"]
                    + r["fixed_rate"]["dropped"]
                    + r["fixed_rate"]["errors"]
                    for r in runs
                ),
                "hub_lag_ms": _spread(
                    [r["fixed_rate"]["probe_max_lag_ms"] for r in runs]
                ),
                "hub_lag_saturation_ms": _spread(
                    [r["saturation"]["probe_max_lag_ms"] for r in runs]
                ),
                "records_sent": _total(r["records"]["sent"] for r in runs),
                "records_lost": _total(r["records"]["lost"] for r in runs),
                "records_duplicated": _total(r["records"]["duplicates"] for r in runs),
                "spans_sent": _total(r["spans"]["sent"] for r in runs),
                "spans_lost": _total(r["spans"]["lost"] for r in runs),
                "unresponsive": sum(1 for r in runs if r.get("unresponsive")),
                "rss_mib": _spread([r.get("worker_rss_mib") for r in runs]),
                # Later rounds kill a stuck server sooner, so the shutdown time
                # is the first round's.
                "stop_seconds": max(r["stop"]["seconds"] for r in first_round),
                "stop_killed": any(r["stop"]["killed"] for r in first_round),
            }
        )

    by_key = {(r["server"], r["mode"], r["condition"]): r for r in rows}
    for row in rows:
        bare = by_key.get((row["server"], "bare", "fast"))
        fast = by_key.get((row["server"], row["mode"], "fast"))
        row["rps_x_bare"] = _ratio(row["rps"], bare and bare["rps"])
        row["p99_x_bare"] = _ratio(row["p99_ms"], bare and bare["p99_ms"])
        row["p99_x_own_fast"] = _ratio(row["p99_ms"], fast and fast["p99_ms"])
        row["hub_lag_x_bare"] = _ratio(row["hub_lag_ms"], bare and bare["hub_lag_ms"])
        row["cpu_added_us"] = (
            row["cpu_us_per_request"]["median"] - bare["cpu_us_per_request"]["median"]
            if bare and row["cpu_us_per_request"] and bare["cpu_us_per_request"]
            else None
        )

    order = {name: i for i, name in enumerate(MODES)}
    conditions = {name: i for i, name in enumerate(CONDITIONS)}
    rows.sort(key=lambda r: (r["server"], conditions[r["condition"]], order[r["mode"]]))

    return rows


def _total(values: Any) -> int:
    return sum(v for v in values if v is not None)


def _ratio(
    value: dict[str, float] | None, base: dict[str, float] | None
) -> float | None:
    if not value or not base or not base["median"]:
        return None
    return value["median"] / base["median"]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of the package, per server and showmax mode: value and verdict."""
    by_key = {(r["server"], r["mode"], r["condition"]): r for r in rows}
    checks = []
    servers = sorted({r["server"] for r in rows})
    for server in servers:
        hand = by_key.get((server, "otel-http", "fast"))
        bare = by_key.get((server, "bare", "fast"))
        for mode in SHOWMAX_MODES:
            ours = by_key.get((server, mode, "fast"))
            if ours is None:
                continue

            def add(
                name: str,
                value: float | None,
                limit: float,
                ok: bool | None,
                unit: str = "",
                server: str = server,
                mode: str = mode,
            ) -> None:
                checks.append(
                    {
                        "server": server,
                        "mode": mode,
                        "target": name,
                        "value": value,
                        "limit": limit,
                        "unit": unit,
                        "met": None if value is None else ok,
                    }
                )

            if hand and hand["cpu_added_us"] and ours["cpu_added_us"] is not None:
                share = ours["cpu_added_us"] / hand["cpu_added_us"]
                add("CPU added / OTel-by-hand's", share, 0.5, share <= 0.5, "x")
            if hand:
                ratio = _ratio(ours["rps"], hand["rps"])
                add(
                    "throughput / OTel-by-hand's",
                    ratio,
                    1.3,
                    ratio is not None and ratio >= 1.3,
                    "x",
                )
            if bare:
                ratio = ours["p99_x_bare"]
                add(
                    "fixed-rate p99 / bare's",
                    ratio,
                    1.25,
                    ratio is not None and ratio <= 1.25,
                    "x",
                )
                lag = ours["hub_lag_x_bare"]
                add("hub lag / bare's", lag, 1.5, lag is not None and lag <= 1.5, "x")
            for condition in ("slow", "down", "blackhole"):
                row = by_key.get((server, mode, condition))
                if row is None:
                    continue
                ratio = row["p99_x_own_fast"]
                add(
                    f"p99 {condition} / own fast",
                    ratio,
                    1.10,
                    ratio is not None and ratio <= 1.10,
                    "x",
                )
            lost = ours["records_lost"] + ours["spans_lost"]
            add("lost, healthy collector", lost, 0, lost == 0)
            for condition in DEAD:
                row = by_key.get((server, mode, condition))
                if row is None:
                    continue
                seconds = row["stop_seconds"]
                bound = SHUTDOWN_BOUND_SECONDS + SHUTDOWN_SLACK_SECONDS
                add(
                    f"shutdown, collector {condition}",
                    seconds,
                    bound,
                    seconds <= bound and not row["stop_killed"],
                    "s",
                )

    return checks


def _fmt(spread: dict[str, float] | None, digits: int = 0) -> str:
    if not spread:
        return "–"
    if spread["n"] == 1:
        return f"{spread['median']:.{digits}f}"
    return (
        f"{spread['median']:.{digits}f} ({spread['min']:.{digits}f}–"
        f"{spread['max']:.{digits}f})"
    )


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def markdown(
    results: dict[str, Any], rows: list[dict[str, Any]], checks: list[dict[str, Any]]
) -> str:
    plan = results["plan"]
    lines = [
        f"Run of {results['started']}: {results['machine']['cpus']} CPUs, Python "
        f"{results['machine']['python']}, {plan['reps']} rounds, "
        f"{plan['saturation_seconds']:g} s saturation (wrk -c{plan['connections']}) "
        f"and {plan['rate_seconds']:g} s at a fixed rate per cell, "
        f"{results.get('wall_seconds', 0) / 60:.1f} min in all. Fixed rate: "
        + ", ".join(f"{s} {r} req/s" for s, r in results["rate_rps"].items())
        + (" (half of bare's capacity)" if plan.get("fixed_rate") is None else "")
        + ". Medians (min–max) over rounds.",
        "",
        "| server | mode | collector | req/s | ×bare | CPU µs/req | p50 ms | "
        "p99 ms | p99 ×bare | max ms | hub lag ms | records lost/sent | "
        "spans lost/sent | RSS MiB | stop s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        dup = (
            f" (+{row['records_duplicated']} dup)" if row["records_duplicated"] else ""
        )
        unfinished = f" ({row['unfinished']} unanswered)" if row["unfinished"] else ""
        busy = (
            f" ({row['unresponsive']} of {row['rounds']} rounds still busy: uncounted)"
            if row["unresponsive"]
            else ""
        )
        lines.append(
            f"| {row['server']} | {row['mode']} | {row['condition']} | "
            f"{_fmt(row['rps'])} | {_x(row['rps_x_bare'])} | "
            f"{_fmt(row['cpu_us_per_request'])} | {_fmt(row['p50_ms'], 1)} | "
            f"{_fmt(row['p99_ms'], 1)}{unfinished} | {_x(row['p99_x_bare'])} | "
            f"{_fmt(row['max_ms'], 0)} | {_fmt(row['hub_lag_ms'], 1)} | "
            f"{row['records_lost']}/{row['records_sent']}{dup}{busy} | "
            f"{row['spans_lost']}/{row['spans_sent']} | {_fmt(row['rss_mib'])} | "
            f"{row['stop_seconds']:.1f}{' killed' if row['stop_killed'] else ''} |"
        )
    for failure in results.get("failed", []):
        lines.append(
            f"| {failure['server']} | {failure['mode']} | {failure['condition']} | "
            f"did not run (round {failure['rep'] + 1}): "
            f"{failure['error'].splitlines()[0][:120]} |" + " |" * 11
        )

    if checks:
        lines += [
            "",
            "| server | mode | target | value | limit | met |",
            "|---|---|---|---|---|---|",
        ]
        for check in checks:
            value = check["value"]
            shown = (
                "–"
                if value is None
                else (
                    f"{value:.2f}{check['unit']}"
                    if isinstance(value, float)
                    else str(value)
                )
            )
            met = {True: "yes", False: "**no**", None: "n/a"}[check["met"]]
            lines.append(
                f"| {check['server']} | {check['mode']} | {check['target']} | "
                f"{shown} | {check['limit']:g}{check['unit']} | {met} |"
            )

    micro = results.get("micro")
    if micro and "error" not in micro:
        lines += [
            "",
            "| micro-benchmark (request path) | median µs | min µs |",
            "|---|---|---|",
        ]
        for name, stats in micro.items():
            lines.append(
                f"| {name} | {stats['median_us']:.2f} | {stats['min_us']:.2f} |"
            )
    elif micro:
        lines += ["", "Micro-benchmarks failed: " + micro["error"].splitlines()[-1]]

    faults = results.get("faults")
    if faults:
        lines += ["", "| fault figure (bench/faults.py) | value |", "|---|---|"]
        for name, figures in faults.items():
            if not isinstance(figures, dict):
                lines.append(f"| {name} | {figures} |")
                continue
            for key, value in figures.items():
                shown = f"{value:.2f}" if isinstance(value, float) else value
                lines.append(f"| {name}: {key} | {shown} |")

    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Throughput and fixed-rate p99 per mode, one bar per collector condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = sorted({r["server"] for r in rows})
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in rows)]
    by_key = {(r["server"], r["mode"], r["condition"]): r for r in rows}
    colours = {
        "fast": "#2a9d8f",
        "slow": "#e9c46a",
        "down": "#e76f51",
        "blackhole": "#264653",
    }
    figure, axes = plt.subplots(
        2, len(servers), figsize=(7 * len(servers), 8), squeeze=False
    )
    width = 0.8 / max(1, len(conditions))
    for column, server in enumerate(servers):
        for line, (metric, title) in enumerate(
            (("rps", "requests/s (saturation)"), ("p99_ms", "p99 ms at a fixed rate"))
        ):
            axis = axes[line][column]
            floor = 1.0
            bare = by_key.get((server, "bare", "fast"))
            if bare and bare[metric]:
                axis.axhline(
                    bare[metric]["median"],
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label="bare",
                )
            for offset, condition in enumerate(conditions):
                xs, heights, lows, highs = [], [], [], []
                for index, mode in enumerate(modes):
                    row = by_key.get((server, mode, condition))
                    if row is None or not row[metric]:
                        continue
                    spread = row[metric]
                    xs.append(index + (offset - (len(conditions) - 1) / 2) * width)
                    # A log axis cannot show zero: a mode that served nothing
                    # is drawn at the floor and labelled.
                    median = max(spread["median"], floor)
                    heights.append(median)
                    lows.append(max(0.0, median - max(spread["min"], floor)))
                    highs.append(max(0.0, spread["max"] - median))
                    if spread["median"] < floor:
                        axis.annotate(
                            "0", (xs[-1], floor), ha="center", va="bottom", fontsize=7
                        )
                axis.bar(
                    xs,
                    heights,
                    width,
                    yerr=[lows, highs],
                    capsize=2,
                    label=condition,
                    color=colours[condition],
                )
            axis.set_yscale("log")
            axis.set_ylim(bottom=floor * 0.8)
            axis.set_title(f"{server}: {title}")
            axis.set_xticks(range(len(modes)))
            axis.set_xticklabels(modes, rotation=30, ha="right", fontsize=8)
            axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        title="collector",
        loc="lower center",
        ncol=len(labels),
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_all(results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write results.json, results.md and results.png into `out_dir`."""
    rows = aggregate(results)
    checks = targets(rows)
    text = markdown(results, rows, checks)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "started": results["started"],
        "wall_seconds": results.get("wall_seconds"),
        "plan": results["plan"],
        "machine": results["machine"],
        "capacity_rps": results["capacity_rps"],
        "rate_rps": results["rate_rps"],
        "cells": rows,
        "targets": checks,
        "micro": results.get("micro"),
        "faults": results.get("faults"),
        "failed": results.get("failed", []),
        "runs": results["runs"],
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "results.md").write_text(text)
    if rows:
        plot(rows, out_dir / "results.png")

    return {"markdown": text, "rows": rows, "targets": checks}


if __name__ == "__main__":
    source = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else (Path(__file__).parent / "results" / "raw" / "runs.json")
    )
    loaded = json.loads(source.read_text())
    micro_path = source.parent / "micro.json"
    write_all(loaded, source.parent.parent)
