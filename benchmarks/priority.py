"""Quota benchmark of issue 21: a live job on a higher priority beside a backfill, one quota.

    python -m benchmarks.quota --quick --only priority      # ~1.5 min
    python -m benchmarks.quota --only priority               # ~4 min

Three runs, each against its own simulator (R per minute in one-second slices, ``--burst_secs
1``; log-normal latency, median 300 ms, p99 3 s) and its own ``redis-server``:

1. ``alone`` — the live job alone: told about a fifth of the limit (``--requests_per_minute
   0.19 R``),
   ``--quota_priority high``, ``--shared_quota``; its input outlasts the window, so it always
   has a request waiting (as a live job at a fifth of the limit does, at its own pace).
2. ``beside`` — the same live job and a backfill (told R, ``normal``, an input that outlasts the
   window), started together on one ``--quota_key``.
3. ``fifo`` — run 2 with the live job at ``normal``: first come, first served (a control).

Each job reaches the simulator through its own path of a :class:`benchmarks.gate.JobGate`. Once
every job of a run has had an answer, plus ``warmup_secs``, ``window_secs`` are measured, then the
jobs are killed. Figures (``priority_*``): the provider's successes/s ÷ (R/60) in the window of
run 2 (``utilization``), its 429s ÷ requests over the whole run (``rate_limited_fraction``), the
live job's answers/s ÷ the rate it paces at (``live_share``), and its **quota wait**: how much
later than its own pace each request reached the gate (``live_wait_ms_mean``,
``live_wait_ms_p99``; ``alone_*`` and ``fifo_*`` for runs 1 and 3). Its own pace is a GCRA
schedule in Redis, one interval of its rate apart (it always has a request waiting, so no place
is skipped): alone, the quota's TAT; beside the backfill, its job's own lane (it is told less
than the quota's limit). At the window's end the benchmark reads that TAT and Redis's clock (the
same host's wall clock as the gate's): the schedule's places are ``TAT - k x interval``, and a
request's wait is the time from the place before it to its arrival, ``(t - TAT) mod
interval`` (every wait is far shorter than the 271 ms interval).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from benchmarks.gate import JobGate
from benchmarks.jobs import Job, provider_window
from benchmarks.run import Bench, Simulator, _latency_flags, _remove_tree
from transforms.llm.limits import SHARED_PACE

#: The live job is told this fraction of the limit: about a fifth, but not a whole fraction, so
#: that its places fall at every phase of the backfill's (at exactly a fifth, every one of its
#: requests would meet the backfill at the same point of an interval, and wait the same).
LIVE_FRACTION = 0.19

ROWS = (("priority_utilization", "{:.3f}", ">= 0.95 (live job + backfill)"),
        ("priority_rate_limited_fraction", "{:.4f}", "<= 0.005"),
        ("priority_live_share", "{:.3f}", "~1 (its answers / its own rate)"),
        ("priority_alone_wait_ms_mean", "{:.1f}", "(live job alone)"),
        ("priority_alone_wait_ms_p99", "{:.1f}", "(live job alone)"),
        ("priority_live_wait_ms_mean", "{:.1f}", "(live job, high, beside the backfill)"),
        ("priority_live_wait_ms_p99", "{:.1f}", "(live job, high, beside the backfill)"),
        ("priority_fifo_wait_ms_mean", "{:.1f}", "(control: live job normal)"),
        ("priority_fifo_wait_ms_p99", "{:.1f}", "(control: live job normal)"),
        ("priority_fifo_utilization", "{:.3f}", "(control: live job normal)"))


def quota_waits(asked: list[float], place: float, interval: float) -> list[float]:
    """How long after its place in a schedule of one request per ``interval`` each request came.

    Args:
      asked: When the requests arrived (POSIX seconds).
      place: One place of the schedule (POSIX seconds).
      interval: The schedule's spacing, seconds (longer than any wait).

    Returns:
      Seconds, one per request.
    """
    return [(t - place) % interval for t in asked]


def _schedule(url: str, quota_key: str) -> float:
    """The live job's last place (POSIX seconds): its own lane's TAT, or alone the quota's,
    less one interval (a TAT is where the NEXT place would be)."""
    import redis  # pylint: disable=import-outside-toplevel

    client = redis.Redis.from_url(url)
    try:
        base = f"ticketflow:quota:{{{quota_key}}}"
        lanes = list(client.scan_iter(match=f"{base}:job:*:rpm"))
        tat = client.get(lanes[0] if lanes else f"{base}:rpm")
        return float(tat) / 1e6
    finally:
        client.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def _run(bench: Bench, sizes, tag: str, live_priority: str, backfill: bool) -> dict[str, Any]:
    """One run: the live job on ``live_priority``, beside the backfill or not."""
    from benchmarks.quota import _redis, _wait_for_answers  # pylint: disable=import-outside-toplevel

    rpm, live_rpm = sizes.rpm, sizes.rpm * LIVE_FRACTION
    redis = _redis(bench.workdir / f"redis-{tag}")
    key = f"bench-{uuid.uuid4().hex[:8]}"
    quota = ["--shared_quota", redis.url, "--quota_key", key]
    live_tickets = math.ceil((sizes.window_secs + sizes.warmup_secs + 60) * live_rpm / 60)
    jobs: dict[str, Job] = {}
    try:
        with Simulator("--rpm", str(rpm), "--burst_secs", "1", *_latency_flags()) as sim, \
                JobGate(sim.base_url) as gate:
            try:
                if backfill:
                    jobs["backfill"] = Job.start(f"{tag}-backfill", [
                        "--input", str(bench.tickets(sizes.job_tickets)),
                        "--base_url", gate.base_url("backfill"), "--requests_per_minute",
                        str(rpm), "--max_concurrency", str(sizes.concurrency), *quota],
                        bench.workdir)
                jobs["live"] = Job.start(f"{tag}-live", [
                    "--input", str(bench.tickets(live_tickets)),
                    "--base_url", gate.base_url("live"), "--requests_per_minute",
                    f"{live_rpm:g}", "--quota_priority", live_priority,
                    "--max_concurrency", str(sizes.concurrency), *quota], bench.workdir)
                _wait_for_answers(jobs, gate)
                time.sleep(sizes.warmup_secs)
                start = time.time()
                time.sleep(sizes.window_secs)
                end = time.time()
                stats = sim.stats()
                tat = _schedule(redis.url, key)
                ended = [job.name for job in jobs.values() if job.process.poll() is not None]
            finally:
                for job in jobs.values():
                    job.kill()
            counts = {name: gate.counts(name, start, end) for name in jobs}
            asked = gate.asked("live", start, end)
    finally:
        redis.stop()
    for job in jobs.values():
        if job.output.exists():
            _remove_tree(job.output)
    window = provider_window(stats, start, end)
    paced = live_rpm * SHARED_PACE / 60.0
    waits = quota_waits(asked, tat, 1.0 / paced)
    bench.log(f"    {tag}: window {window['seconds']} s: {window['ok_per_sec']:.2f} ok/s; "
              + ", ".join(f"{name} {c['ok'] / (end - start):.2f} ok/s" for name, c in
                          counts.items())
              + f"; live waits mean {1e3 * sum(waits) / max(1, len(waits)):.1f} ms, p99 "
              f"{1e3 * _percentile(waits, 0.99):.1f} ms; {stats['rate_limited']} 429s of "
              f"{stats['requests']}")
    if ended:
        bench.log(f"    {tag}: WARNING jobs {ended} ended inside the window")
    return {"utilization": window["ok_per_sec"] / (rpm / 60.0),
            "rate_limited_fraction": stats["rate_limited"] / max(1, stats["requests"]),
            "live_share": counts["live"]["ok"] / (end - start) / paced,
            "wait_ms_mean": 1e3 * sum(waits) / max(1, len(waits)),
            "wait_ms_p99": 1e3 * _percentile(waits, 0.99),
            "details": {"window_secs": window["seconds"], "ok_by_second": window["ok_by_second"],
                        "job_window": counts, "requests": stats["requests"],
                        "rate_limited": stats["rate_limited"], "live_requests": len(asked),
                        "ended_inside_window": ended}}


def scenario_priority(bench: Bench, sizes, src=None) -> dict[str, Any]:
    """The live job alone, beside the backfill on ``high``, and (control) on ``normal``."""
    del src  # priorities do not exist before issue 21
    bench.log(f"  priority: live job told {LIVE_FRACTION:g} of {sizes.rpm}/min, a backfill told "
              f"all of it; {sizes.window_secs:g} s windows")
    alone = _run(bench, sizes, "priority-alone", "high", backfill=False)
    beside = _run(bench, sizes, "priority-beside", "high", backfill=True)
    fifo = _run(bench, sizes, "priority-fifo", "normal", backfill=True)
    return {"priority_utilization": beside["utilization"],
            "priority_rate_limited_fraction": beside["rate_limited_fraction"],
            "priority_live_share": beside["live_share"],
            "priority_alone_wait_ms_mean": alone["wait_ms_mean"],
            "priority_alone_wait_ms_p99": alone["wait_ms_p99"],
            "priority_live_wait_ms_mean": beside["wait_ms_mean"],
            "priority_live_wait_ms_p99": beside["wait_ms_p99"],
            "priority_fifo_wait_ms_mean": fifo["wait_ms_mean"],
            "priority_fifo_wait_ms_p99": fifo["wait_ms_p99"],
            "priority_fifo_utilization": fifo["utilization"],
            "details_priority": {"alone": alone, "beside": beside, "fifo": fifo,
                                 "live_fraction": LIVE_FRACTION}}
