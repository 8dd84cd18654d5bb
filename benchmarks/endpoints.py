"""Endpoints benchmark (issue 23): one job spread over several deployments (``--endpoints``).

    python -m benchmarks.endpoints --smoke --json out/endpoints-smoke.json   # ~1.5 min (CI)
    python -m benchmarks.endpoints --json out/endpoints.json                 # ~9 min: figures

Every simulator is ``python -m simulator --port P --rpm R --burst_secs 1`` with the benchmarks'
log-normal latency (median 300 ms, p99 3 s), started on a fixed free port
(:class:`benchmarks.jobs.Provider`, so that it can be stopped and started again). Each job is
``python -m pipeline --endpoints FILE`` with its defaults otherwise; each endpoint of the file is
told its provider's limit. The providers' ``per_second`` buckets are the measure:

1. ``spread_*`` — two endpoints of 600 RPM each, 3,000 tickets: the two providers' successes/s
   together over the run's steady state ÷ 20 (target ≥ 0.95 of 1,200 RPM), 429s ÷ requests,
   each endpoint's share of the answers, dead letters (0).
2. ``kill_*`` — the same, and one provider is stopped once a quarter of the tickets are
   answered, and started again on its port 60 s later: the other provider's successes/s while
   the first is down ÷ 10 (target ≥ 0.95: it stays at its limit), dead letters (0), and the
   answers of the first after it is back (target > 0: it rejoins).
3. ``fallback_*`` — a primary of 300 RPM and a fallback of 600 RPM: with both up, the
   fallback's share of the answers (target ≈ 0: it takes only what the primary cannot) and the
   primary's utilisation; with the primary down (nothing listens on its port), the fallback's
   share (target 1.0) and the dead letters (0).

The load average is recorded before each scenario and at the end: this box is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.jobs import Job, Provider, free_port, provider_window
from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import Bench, _latency_flags, _remove_tree, steady_state

_REPO = Path(__file__).resolve().parent.parent
KILL_AFTER = 0.25


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""
    rpm: int                 # each of the two spread endpoints
    tickets: int             # spread and kill
    down_secs: float         # kill: how long the first endpoint is down
    primary_rpm: int         # fallback: the primary's limit
    fallback_rpm: int
    fallback_tickets: int


DEFAULT = Sizes(rpm=600, tickets=3000, down_secs=60, primary_rpm=300, fallback_rpm=600,
                fallback_tickets=600)
# The smallest run that yields every figure (tests/test_benchmarks_smoke.py): figures mean nothing.
SMOKE = Sizes(rpm=600, tickets=120, down_secs=4, primary_rpm=300, fallback_rpm=600,
              fallback_tickets=24)

FIGURES = ("spread_utilization", "spread_rate_limited_fraction", "spread_share_a",
           "spread_share_b", "spread_dead_letters", "kill_down_secs",
           "kill_survivor_utilization", "kill_dead_letters", "kill_rejoined_answers",
           "fallback_share_primary_up", "fallback_primary_utilization",
           "fallback_share_primary_down", "fallback_dead_letters")


def endpoints_file(path: Path, *entries: dict[str, Any]) -> Path:
    """Writes an endpoints file of ``entries`` (each a flat mapping)."""
    lines = ["endpoints:"]
    for entry in entries:
        lines.append("  - " + "\n    ".join(f"{k}: {v}" for k, v in entry.items()))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def merged_per_second(*stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Several providers' ``per_second`` buckets added up by wall-clock second."""
    merged: dict[int, dict[str, int]] = {}
    for one in stats:
        for bucket in one["per_second"]:
            t = int(one["started_at"]) + bucket["t"]
            into = merged.setdefault(t, {"t": t, "requests": 0, "ok": 0, "rate_limited": 0})
            for key in ("requests", "ok", "rate_limited"):
                into[key] += bucket[key]
    return [merged[t] for t in sorted(merged)]


def _provider(rpm: int) -> Provider:
    return Provider(free_port(), "--rpm", str(rpm), "--burst_secs", "1", *_latency_flags())


def _run(bench: Bench, name: str, tickets: int, entries, during=None) -> dict[str, Any]:
    """Runs one job over ``entries``; ``during(job)`` runs while it does. Returns its summary."""
    path = endpoints_file(bench.workdir / f"{name}.yaml", *entries)
    job = Job.start(name, ["--input", str(bench.tickets(tickets)), "--endpoints", str(path)],
                    bench.workdir)
    try:
        if during is not None:
            during(job)
        summary = job.finish(timeout=3600)
    finally:
        job.kill()
    bench.log(f"    {name}: {summary['succeeded']} ok, {summary['dead_lettered']} dead letters, "
              f"{job.wall_s:.0f} s wall, endpoints {summary.get('endpoints')}")
    _remove_tree(job.output)
    return summary


def scenario_spread(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenario 1: two endpoints of R RPM each, together at 2R."""
    bench.log(f"  spread: {sizes.tickets} tickets over two endpoints of {sizes.rpm}/min")
    with _provider(sizes.rpm) as a, _provider(sizes.rpm) as b:
        summary = _run(bench, "spread", sizes.tickets, [
            {"name": "a", "base_url": a.base_url, "requests_per_minute": sizes.rpm},
            {"name": "b", "base_url": b.base_url, "requests_per_minute": sizes.rpm}])
        stats = [a.stats(), b.stats()]
    steady = steady_state(merged_per_second(*stats))
    requests = sum(s["requests"] for s in stats)
    limited = sum(s.get("rate_limited", 0) for s in stats)
    shares = summary["endpoints"]
    return {"spread_utilization": steady["ok_per_sec"] / (2 * sizes.rpm / 60.0),
            "spread_rate_limited_fraction": limited / requests if requests else 0.0,
            "spread_share_a": shares["a"]["share"], "spread_share_b": shares["b"]["share"],
            "spread_dead_letters": summary["dead_lettered"],
            "details_spread": {"steady": steady, "endpoints": shares,
                               "wall_secs": summary["wall_secs"]}}


def scenario_kill(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenario 2: one of the two endpoints down for ``down_secs`` in the middle of the job."""
    bench.log(f"  kill: {sizes.tickets} tickets, endpoint a down {sizes.down_secs:g} s after "
              f"{KILL_AFTER:.0%} of them")
    window: dict[str, float] = {}
    with _provider(sizes.rpm) as a, _provider(sizes.rpm) as b:
        def outage(job: Job) -> None:
            deadline = time.monotonic() + 600
            while (a.stats()["successful_completions"] + b.stats()["successful_completions"]
                   < KILL_AFTER * sizes.tickets):
                if job.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("kill: the job ended or stalled before the outage")
                time.sleep(0.2)
            window["down_at"] = time.time()
            a.stop()
            time.sleep(sizes.down_secs)
            window["up_at"] = time.time()
            a.start()

        summary = _run(bench, "kill", sizes.tickets, [
            {"name": "a", "base_url": a.base_url, "requests_per_minute": sizes.rpm},
            {"name": "b", "base_url": b.base_url, "requests_per_minute": sizes.rpm}],
            during=outage)
        survivor = provider_window(b.stats(), window["down_at"], window["up_at"])
        rejoined = a.stats()["successful_completions"]
    return {"kill_down_secs": window["up_at"] - window["down_at"],
            "kill_survivor_utilization": survivor["ok_per_sec"] / (sizes.rpm / 60.0),
            "kill_dead_letters": summary["dead_lettered"],
            "kill_rejoined_answers": rejoined,
            "details_kill": {"survivor": {k: v for k, v in survivor.items()
                                          if k != "ok_by_second"},
                             "endpoints": summary["endpoints"],
                             "wall_secs": summary["wall_secs"]}}


def scenario_fallback(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenario 3: a primary and a fallback; then the primary down."""
    n = sizes.fallback_tickets
    bench.log(f"  fallback: {n} tickets, a primary of {sizes.primary_rpm}/min and a fallback")
    with _provider(sizes.primary_rpm) as primary, _provider(sizes.fallback_rpm) as spare:
        spare_entry = {"name": "spare", "base_url": spare.base_url, "role": "fallback",
                       "requests_per_minute": sizes.fallback_rpm}
        up = _run(bench, "fallback-up", n, [
            {"name": "main", "base_url": primary.base_url,
             "requests_per_minute": sizes.primary_rpm}, spare_entry])
        steady = steady_state(primary.stats()["per_second"])
        down = _run(bench, "fallback-down", n, [
            {"name": "main", "base_url": f"http://127.0.0.1:{free_port()}/v1",
             "requests_per_minute": sizes.primary_rpm}, spare_entry])
    return {"fallback_share_primary_up": up["endpoints"]["spare"]["share"],
            "fallback_primary_utilization": steady["ok_per_sec"] / (sizes.primary_rpm / 60.0),
            "fallback_share_primary_down": down["endpoints"]["spare"]["share"],
            "fallback_dead_letters": up["dead_lettered"] + down["dead_lettered"],
            "details_fallback": {"up": up["endpoints"], "down": down["endpoints"]}}


SCENARIOS = {"spread": scenario_spread, "kill": scenario_kill, "fallback": scenario_fallback}

_ROWS = (("spread_utilization", "{:.3f}", ">= 0.95 (of the two limits together)"),
         ("spread_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("spread_share_a", "{:.3f}", "~0.5"),
         ("spread_share_b", "{:.3f}", "~0.5"),
         ("spread_dead_letters", "{}", "0"),
         ("kill_down_secs", "{:.1f}", "(endpoint a down)"),
         ("kill_survivor_utilization", "{:.3f}", ">= 0.95 (b while a is down)"),
         ("kill_dead_letters", "{}", "0"),
         ("kill_rejoined_answers", "{}", "> 0 (a after it is back)"),
         ("fallback_share_primary_up", "{:.3f}", "~0 (only what the primary cannot)"),
         ("fallback_primary_utilization", "{:.3f}", ">= 0.95"),
         ("fallback_share_primary_down", "{:.3f}", "1.0"),
         ("fallback_dead_letters", "{}", "0"))


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    return figures_lib.format_table(_ROWS, figures)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the scenarios, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.endpoints",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest runs: every key, no figure worth reading (CI)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep the jobs' outputs and logs here (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else DEFAULT

    figures = figures_lib.start("smoke" if args.smoke else "default")
    with tempfile.TemporaryDirectory(prefix="ticketflow-endpoints-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, log=log)
        for name in args.only or list(SCENARIOS):
            figures_lib.note_load(figures, name)
            figures.update(SCENARIOS[name](bench, sizes))
    return figures_lib.finish(figures, format_table, FIGURES, args.json, complete=not args.only)


if __name__ == "__main__":
    sys.exit(main())
