"""Quota benchmark of issue 12: one quota for every job, exact pacing, riding out an outage.

    python -m benchmarks.quota --quick                    # ~2 min (4 on a loaded box), every key
    python -m benchmarks.quota --smoke                    # every key, no figure worth reading (CI)
    python -m benchmarks.quota --json out/quota.json      # ~13 min
    python -m benchmarks.quota --baseline_commit 531a3fc  # + slices and outage on that commit

Every scenario runs ``python -m pipeline`` children against the simulator (``--burst_secs 1``:
its per-minute limit R is enforced in one-second slices of R/60; log-normal latency, median
300 ms, p99 3 s):

1. ``shared_quota_*`` — three jobs started together (``c`` a 2-process FnApiRunner job, ``a``
   and ``b`` one process each), every one told the full limit ``--requests_per_minute R`` and
   ``--shared_quota redis://...`` (a real ``redis-server`` on a free 127.0.0.1 port) with one
   ``--quota_key``. Each job reaches the simulator through its own path of a
   :class:`benchmarks.gate.JobGate`, which counts answers per job. Once every job has had an
   answer (+ a short warm-up), a window of ``window_secs`` is measured, then the jobs are killed
   (their inputs outlast the window: no job runs dry in it, and no tail is waited for). In the
   window: the provider's successes/s ÷ (R/60) (``shared_quota_utilization``), each job's
   share of the answers and the smallest share ÷ the largest (``shared_quota_fairness``); all
   429s ÷ all requests from the start to the window's end.
2. ``static_share_*`` — the same three jobs without Redis, each told the full limit (what two
   jobs on one API key do without a shared quota); ``static_split_*`` — each told R/3.
3. ``slice_*`` — one job, RPM then TPM: :func:`benchmarks.pacing.scenario_slices`.
4. ``outage_*`` — one job, the provider killed mid-run and restarted on the same port:
   :func:`benchmarks.outage.scenario_outage`.
5. ``shared_single_*`` (only with ``--only shared_single``) — scenario 1 with three 1-process
   jobs: a control that tells the multi-process job's effect on the shares apart.
6. ``priority_*`` (only with ``--only priority``) — a live job (``--quota_priority high``, told
   a fifth of the limit) alone, then beside a backfill on one quota, then beside it on
   ``normal``: :mod:`benchmarks.priority`.

With ``--baseline_commit REV`` the pipeline of REV (``git archive``) also runs scenarios 3 (RPM
and TPM) and 4, against the same simulator: ``baseline_*`` figures, side by side. The load
average is recorded before each scenario: the box these figures come from is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import pacing
from benchmarks.gate import JobGate
from benchmarks.jobs import Job, fairness, provider_window, source_tree
from benchmarks.outage import scenario_outage
from benchmarks.priority import ROWS as PRIORITY_ROWS
from benchmarks.priority import scenario_priority
from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import (
    MAX_TOKENS,
    Bench,
    Simulator,
    _latency_flags,
    _remove_tree,
    steady_state,
)

#: The 2-process job: FnApiRunner in multi_processing mode.
MULTI_PROCESS = ("--runner", "FnApiRunner", "--direct_num_workers", "2",
                 "--direct_running_mode", "multi_processing")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""
    rpm: int
    window_secs: float       # measured while all three jobs are sending
    warmup_secs: float       # after the last job's first answer, before the window
    job_tickets: int         # per job: more than it can send before the window ends
    slice_tickets: int       # the single-job RPM and TPM runs
    outage_tickets: int
    outage_down_secs: float
    tpm: int = 450_000
    concurrency: int = 64


QUICK = Sizes(rpm=1200, window_secs=8, warmup_secs=2, job_tickets=2000, slice_tickets=150,
              outage_tickets=200, outage_down_secs=8)
#: The smallest run that still yields every figure: what CI runs (tests/test_benchmarks_smoke.py).
SMOKE = Sizes(rpm=1200, window_secs=3, warmup_secs=1, job_tickets=600, slice_tickets=60,
              outage_tickets=80, outage_down_secs=3)
DEFAULT = Sizes(rpm=1200, window_secs=60, warmup_secs=3, job_tickets=4000, slice_tickets=1800,
                outage_tickets=2000, outage_down_secs=90)
#: Jobs of the multi-job scenarios; "c" is the 2-process one.
JOBS = ("c", "a", "b")

#: Every key the JSON carries in every mode (the smoke test checks them).
FIGURES = ("shared_quota_utilization", "shared_quota_rate_limited_fraction",
           "shared_quota_fairness", "static_share_utilization",
           "static_share_rate_limited_fraction", "static_share_fairness",
           "static_split_utilization", "static_split_rate_limited_fraction",
           "static_split_fairness", "slice_utilization", "slice_rate_limited_fraction",
           "slice_tpm_utilization", "slice_tpm_rate_limited_fraction", "outage_dead_letters",
           "outage_secs", "outage_retries", "outage_down_secs")


def _redis(directory: Path):
    """A started ``tests.redis_server.RedisServer`` (its helper skips tests; this one fails).

    Raises:
      RuntimeError: when ``redis-server`` is not installed.
    """
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    from tests.redis_server import RedisServer  # pylint: disable=import-outside-toplevel
    return RedisServer(directory).start()


def _wait_for_answers(jobs: dict[str, Job], gate: JobGate, timeout: float = 300) -> None:
    """Waits until every job got a first answer.

    Raises:
      RuntimeError: when a job exits or the timeout passes first.
    """
    deadline = time.monotonic() + timeout
    while any(gate.first_answer(name) is None for name in jobs):
        for job in jobs.values():
            if job.process.poll() is not None:
                raise RuntimeError(f"job {job.name} exited {job.process.returncode} before the "
                                   f"window: {job.log_path.read_text()[-1500:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every job reached the provider in {timeout:.0f} s")
        time.sleep(0.2)


def run_jobs(bench: Bench, sizes: Sizes, tag: str, flags_of: Callable[[str], Sequence[str]],
             multi: bool = True) -> dict[str, Any]:
    """Runs jobs c, a and b at once against one sliced simulator; measures a window of them.

    The jobs start together, each through its own path of a :class:`JobGate` (so answers are
    counted per job). Once every job has had an answer, plus ``warmup_secs``, the window of
    ``window_secs`` is measured; then the jobs are killed (their inputs are larger than the
    window needs, so none of them runs dry inside it and no long tail is waited for).

    Args:
      bench: Ticket files and the work directory.
      sizes: The mode's sizes.
      tag: Names the scenario (outputs, log lines, figure prefix).
      flags_of: The limit flags of job ``name`` (``--requests_per_minute``, ``--shared_quota``).
      multi: Whether job c runs 2 processes; when False all three run one (a control).

    Raises:
      RuntimeError: when a job fails before the window.
    """
    rpm = sizes.rpm
    bench.log(f"  {tag}: jobs c ({2 if multi else 1} process(es)), a, b; provider {rpm}/min "
              f"in one-second slices; {sizes.window_secs:g} s window")
    jobs: dict[str, Job] = {}
    with Simulator("--rpm", str(rpm), "--burst_secs", "1", *_latency_flags()) as sim, \
            JobGate(sim.base_url) as gate:
        try:
            for name in JOBS:
                flags = ["--input", str(bench.tickets(sizes.job_tickets)),
                         "--base_url", gate.base_url(name),
                         "--max_concurrency", str(sizes.concurrency), *flags_of(name)]
                jobs[name] = Job.start(f"{tag}-{name}", [*flags, *MULTI_PROCESS]
                                       if name == "c" and multi else flags, bench.workdir)
            _wait_for_answers(jobs, gate)
            skew = (max(gate.first_answer(n) for n in jobs)
                    - min(gate.first_answer(n) for n in jobs))
            time.sleep(sizes.warmup_secs)
            start = time.time()
            time.sleep(sizes.window_secs)
            end = time.time()
            stats = sim.stats()
            ended = [job.name for job in jobs.values() if job.process.poll() is not None]
        finally:
            for job in jobs.values():
                job.kill()
        per_job = {name: gate.counts(name, start, end) for name in jobs}
        totals = {name: gate.totals(name) for name in jobs}
    window = provider_window(stats, start, end)
    fair = fairness({name: c["ok"] / (end - start) for name, c in per_job.items()})
    bench.log(f"    {tag}: first answers {skew:.1f} s apart; window {window['seconds']} s: "
              f"{window['ok_per_sec']:.2f} ok/s, {window['rate_limited']} 429s of "
              f"{window['requests']}; whole run {stats['rate_limited']} 429s of "
              f"{stats['requests']}; shares " + ", ".join(
                  f"{n} {share:.2f}" for n, share in fair["shares"].items()))
    if ended:
        bench.log(f"    {tag}: WARNING jobs {ended} ended inside the window")
    for job in jobs.values():
        if job.output.exists():
            _remove_tree(job.output)
    return {
        f"{tag}_utilization": window["ok_per_sec"] / (rpm / 60.0),
        f"{tag}_rate_limited_fraction": stats["rate_limited"] / max(1, stats["requests"]),
        f"{tag}_fairness": fair["min_over_max"],
        f"details_{tag}": {
            "rpm": rpm, "window_secs": window["seconds"], "warmup_secs": sizes.warmup_secs,
            "first_answers_apart_secs": round(skew, 2), "ended_inside_window": ended,
            "provider_ok_per_sec": window["ok_per_sec"], "ok_by_second": window["ok_by_second"],
            "window_requests": window["requests"], "window_rate_limited": window["rate_limited"],
            "window_rate_limited_fraction": window["rate_limited"] / max(1, window["requests"]),
            "requests": stats["requests"], "rate_limited": stats["rate_limited"],
            "job_window": per_job, "job_totals": totals, "job_shares": fair["shares"],
            "jain_index": fair["jain"]}}


def _shared(bench: Bench, sizes: Sizes, tag: str, multi: bool) -> dict[str, Any]:
    redis = _redis(bench.workdir / "redis")
    key = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        return run_jobs(bench, sizes, tag, lambda name: (
            "--requests_per_minute", str(sizes.rpm), "--shared_quota", redis.url,
            "--quota_key", key), multi=multi)
    finally:
        redis.stop()


def scenario_shared(bench: Bench, sizes: Sizes, src: Path | None) -> dict[str, Any]:
    """Scenario 1: three jobs, one quota in a real Redis, each told the full limit."""
    del src  # the shared quota does not exist before issue 12
    return _shared(bench, sizes, "shared_quota", multi=True)


def scenario_shared_single(bench: Bench, sizes: Sizes, src: Path | None) -> dict[str, Any]:
    """A control of scenario 1 (only with ``--only shared_single``): three 1-process jobs."""
    del src
    return _shared(bench, sizes, "shared_single", multi=False)


def scenario_static(bench: Bench, sizes: Sizes, src: Path | None) -> dict[str, Any]:
    """Scenario 2: the same jobs without Redis, told the full limit, then a third of it."""
    del src
    out = run_jobs(bench, sizes, "static_share",
                   lambda name: ("--requests_per_minute", str(sizes.rpm)))
    out.update(run_jobs(bench, sizes, "static_split",
                        lambda name: ("--requests_per_minute", f"{sizes.rpm / 3:g}")))
    return out


def _slice_sizes(sizes: Sizes) -> pacing.Sizes:
    return pacing.Sizes(rpm=sizes.rpm, rpm_tickets=sizes.slice_tickets, tpm=sizes.tpm,
                        tpm_tickets=sizes.slice_tickets, real_rpm=sizes.rpm, told_factor=5.0,
                        too_high_tickets=0, minute_tickets=0, concurrency=sizes.concurrency)


def _baseline_slice(bench: Bench, sizes: Sizes, src: Path, limit: str) -> dict[str, Any]:
    """One job of the older pipeline against one-second slices, measured as pacing does."""
    value = sizes.rpm if limit == "rpm" else sizes.tpm
    flag = "--requests_per_minute" if limit == "rpm" else "--tokens_per_minute"
    bench.log(f"  baseline slices, {limit.upper()} {value}: {sizes.slice_tickets} tickets")
    with Simulator(f"--{limit}", str(value), "--burst_secs", "1", *_latency_flags()) as sim:
        job = Job.start(f"baseline-slice-{limit}", [
            "--input", str(bench.tickets(sizes.slice_tickets)), "--base_url", sim.base_url,
            flag, str(value), "--max_concurrency", str(sizes.concurrency)], bench.workdir, src)
        try:
            summary = job.finish(timeout=3600)
        finally:
            job.kill()
        stats = sim.stats()
    bench.log(f"    baseline pipeline {sizes.slice_tickets} tickets {flag} {value}: "
              f"{job.wall_s:.1f} s wall, {summary['succeeded']} ok, "
              f"{summary['dead_lettered']} dead letters")
    _remove_tree(job.output)
    steady = steady_state(stats["per_second"])
    rate = steady["ok_per_sec"]
    if limit == "tpm":
        rate *= stats["prompt_tokens"] / max(1, stats["successful_completions"]) + MAX_TOKENS
    key = "slice" if limit == "rpm" else "slice_tpm"
    return {f"baseline_{key}_utilization": rate / (value / 60.0),
            f"baseline_{key}_rate_limited_fraction":
                stats["rate_limited"] / max(1, stats["requests"]),
            f"details_baseline_{key}": {"steady": steady, "requests": stats["requests"],
                                        "rate_limited": stats["rate_limited"],
                                        "dead_letters": summary["dead_lettered"]}}


def scenario_slices(bench: Bench, sizes: Sizes, src: Path | None) -> dict[str, Any]:
    """Scenario 3: exact pacing against one-second slices (``benchmarks.pacing``)."""
    out = pacing.scenario_slices(bench, _slice_sizes(sizes))
    if src is not None:
        out.update(_baseline_slice(bench, sizes, src, "rpm"))
        out.update(_baseline_slice(bench, sizes, src, "tpm"))
    return out


def scenario_outages(bench: Bench, sizes: Sizes, src: Path | None) -> dict[str, Any]:
    """Scenario 4: the provider down mid-run (``benchmarks.outage``)."""
    out = scenario_outage(bench, sizes.outage_tickets, sizes.rpm, sizes.outage_down_secs)
    if src is not None:
        out.update(scenario_outage(bench, sizes.outage_tickets, sizes.rpm,
                                   sizes.outage_down_secs, src=src, prefix="baseline_"))
    return out


SCENARIOS = {"shared": scenario_shared, "static": scenario_static, "slices": scenario_slices,
             "outage": scenario_outages, "shared_single": scenario_shared_single,
             "priority": scenario_priority}
#: What runs without --only.
DEFAULT_SCENARIOS = ("shared", "static", "slices", "outage")

_ROWS = (("shared_quota_utilization", "{:.3f}", ">= 0.95"),
         ("shared_quota_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("shared_quota_fairness", "{:.2f}", ">= 0.8 (min share / max share)"),
         ("shared_single_utilization", "{:.3f}", "(control: three 1-process jobs)"),
         ("shared_single_rate_limited_fraction", "{:.4f}", ""),
         ("shared_single_fairness", "{:.2f}", ""),
         ("static_share_utilization", "{:.3f}", "(baseline: each job told R)"),
         ("static_share_rate_limited_fraction", "{:.4f}", ""),
         ("static_share_fairness", "{:.2f}", ""),
         ("static_split_utilization", "{:.3f}", "(baseline: each job told R/3)"),
         ("static_split_rate_limited_fraction", "{:.4f}", ""),
         ("static_split_fairness", "{:.2f}", ""),
         ("slice_utilization", "{:.3f}", ">= 0.95"),
         ("baseline_slice_utilization", "{:.3f}", "(baseline commit)"),
         ("slice_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("baseline_slice_rate_limited_fraction", "{:.4f}", "(baseline commit)"),
         ("slice_tpm_utilization", "{:.3f}", ">= 0.95"),
         ("baseline_slice_tpm_utilization", "{:.3f}", "(baseline commit)"),
         ("slice_tpm_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("baseline_slice_tpm_rate_limited_fraction", "{:.4f}", "(baseline commit)"),
         ("outage_down_secs", "{:.1f}", "(provider down)"),
         ("outage_dead_letters", "{}", "0"),
         ("baseline_outage_dead_letters", "{}", "(baseline commit)"),
         ("outage_secs", "{}", "(seen by the job)"),
         ("outage_retries", "{}", ""),
         ("baseline_outage_retries", "{}", "(baseline commit)")) + PRIORITY_ROWS


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table (baseline rows only when measured)."""
    rows = [(key, "—" if figures.get(key) is None else fmt.format(figures[key]), target)
            for key, fmt, target in _ROWS
            if key in FIGURES or key in figures]
    loads = figures.get("load_average") or []
    if loads:
        rows.append(("load_average (1 min)", " / ".join(f"{x:.1f}" for x in loads),
                     "before each scenario, and at the end"))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"{'figure'.ljust(width)}  {'value'.ljust(value_width)}  target"]
    lines += [f"{a.ljust(width)}  {b.ljust(value_width)}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the scenarios, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quota",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small counts (~2 min)")
    mode.add_argument("--smoke", action="store_true",
                      help="the smallest counts that yield every key (what CI runs)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--baseline_commit", metavar="REV",
                        help="also run the slice and outage scenarios on the pipeline of REV")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "default"
    sizes = {"quick": QUICK, "smoke": SMOKE}.get(mode_name, DEFAULT)

    figures = figures_lib.start(mode_name)
    with tempfile.TemporaryDirectory(prefix="ticketflow-quota-") as tmp:
        bench = Bench(Path(tmp), log=log)
        src = None
        if args.baseline_commit:
            src = source_tree(args.baseline_commit, Path(tmp) / "baseline")
            figures["baseline_commit"] = args.baseline_commit
        for name in args.only or DEFAULT_SCENARIOS:
            figures_lib.note_load(figures, name)
            found = SCENARIOS[name](bench, sizes, src)
            figures.update(found)
            log("    -> " + ", ".join(f"{k}={v:.4g}" for k, v in found.items()
                                      if isinstance(v, (int, float))))
    return figures_lib.finish(figures, format_table, FIGURES, args.json, complete=not args.only)


if __name__ == "__main__":
    sys.exit(main())
