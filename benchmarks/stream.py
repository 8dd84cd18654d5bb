"""Streaming benchmark of issue 21: first response time, a burst over the limit, a drain, a restart.

    python -m benchmarks.stream --quick --json out/stream-quick.json   # ~3 min: 40 s windows
    python -m benchmarks.stream --smoke --json out/stream-smoke.json   # ~1 min: every key (CI)
    python -m benchmarks.stream --json out/stream.json                 # ~12 min: 3 min windows

Every scenario runs a streaming ``python -m pipeline --input_subscription ...`` child (on Prism,
started by the job's driver) against its own simulator (``--rpm 600 --burst_secs 1``: 10
requests in any second; log-normal latency, median 300 ms, p99 3 s), with
``--requests_per_minute 600 --window_secs 5 --response_store``, reading a subscription of the
local Pub/Sub emulator (``tests/pubsub_server.py``, the real client; ``PUBSUB_EMULATOR_HOST`` in
the job's environment). A publisher thread publishes synthetic tickets (``tools.ticketgen``,
seed 1) at a steady offered rate. Before a window starts, one warm-up ticket is published and
answered, so that the job's start-up is not counted. Every id published is looked for in the
job's finished result and dead-letter files:

1. ``steady_*`` — offered 50 % of the limit for the window. The first response time of the
   window's tickets, ``origin.received_at`` (publish time) → ``finished_at``, p50 and p99, from
   the results; the same from ``summary.json`` (``streaming.first_response_ms_p50/p99``, the
   whole run). Target p99 ≤ max buffering (1 s) + 5 s. ``lost``: ids in neither the results
   nor the dead letters; ``duplicated``: ids more than once in the results.
2. ``overload_*`` — offered 150 % of the limit for the window, then nothing. While backlogged
   (from 5 s into the window to the last second at least two seconds of work were left), the
   simulator's successes per second (its ``per_second`` buckets) ÷ (R/60); 429s ÷ requests of
   the run; the backlog (published − paid for, sampled every second) at its peak and when
   publishing stopped; the drain (publishing stopped → backlog 0); the backlog once every
   ticket is in a file (``backlog_end``: published − ids in results or dead letters, 0).
3. ``sigint_*`` — offered 50 %, SIGINT to the driver halfway through the window: its exit code
   (130), its ledger, every ticket it received in its files (``interrupted``: how many of them
   are dead letters ``interrupted``, received but not answered). The publisher goes on; a
   second job on the same subscription and response store answers the rest, then is stopped
   the same way (its exit code and ledger). Nothing answered by both jobs, every published id
   in one of their files, and the simulator's successful completions equal to the tickets
   answered (none paid twice).

4. ``priority_*`` — a live streaming job (``--quota_priority high``) offered 20 % of the limit,
   on a shared Redis quota (``--shared_quota``, both jobs told the limit): for one window alone,
   then for one window beside a bounded backfill job (``normal``, an input that outlasts the
   window, through a :class:`benchmarks.gate.JobGate` path of its own so that its answers are
   told apart) that saturates the same quota. The window beside starts once the backfill has
   had its first answer and a few seconds more. The live job's first response p99 of the
   tickets published in each window (target: beside ≤ alone + 2 s); the provider's successes/s
   ÷ (R/60) in the window beside (both jobs, ≥ 0.95) and the backfill's part of it; 429s ÷
   requests over the whole run (the backfill's arrival included, ≤ 0.5 %); nothing lost.

The load average is recorded before each scenario and at the end: this box is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.jobs import Job, provider_window
from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import Bench, Simulator, _latency_flags
from pipeline.outputs import parse_utc
from pipeline.report.stream import quantile

_REPO = Path(__file__).resolve().parent.parent
#: The streaming job's default --max_buffering_secs: part of the first response target.
MAX_BUFFERING_SECS = 1.0
_P99_TARGET = f"<= {(MAX_BUFFERING_SECS + 5) * 1000:.0f}"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How long each scenario is in one mode."""
    window_secs: float          # publishing time of each scenario
    file_window_secs: float     # the job's --window_secs
    rpm: int = 600
    steady_fraction: float = 0.5
    overload_fraction: float = 1.5
    live_fraction: float = 0.2
    #: From the backfill's first answer to the start of the window beside it.
    settle_secs: float = 10


DEFAULT = Sizes(window_secs=180, file_window_secs=5)
QUICK = Sizes(window_secs=40, file_window_secs=5)
#: The smallest run that yields every key (tests/test_benchmarks_smoke.py); figures mean nothing.
SMOKE = Sizes(window_secs=3, file_window_secs=1, settle_secs=1)

#: (key, format, target) of every figure, in the order of the table.
_ROWS = (("steady_first_response_p50_ms", "{:.0f}", "(results: publish -> finished_at)"),
         ("steady_first_response_p99_ms", "{:.0f}", _P99_TARGET),
         ("steady_summary_first_response_p50_ms", "{:.0f}", "(summary.json, whole run)"),
         ("steady_summary_first_response_p99_ms", "{:.0f}", _P99_TARGET),
         ("steady_lost", "{}", "0"), ("steady_duplicated", "{}", "0"),
         ("overload_utilization", "{:.3f}", ">= 0.95 (while backlogged)"),
         ("overload_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("overload_backlog_peak", "{}", "(grows)"),
         ("overload_backlog_at_stop", "{}", "(when publishing stopped)"),
         ("overload_backlog_end", "{}", "0"), ("overload_drain_secs", "{:.1f}", ""),
         ("overload_lost", "{}", "0"), ("overload_duplicated", "{}", "0"),
         ("sigint_exit_code", "{}", "130"), ("sigint_ledger_balanced", "{}", "True"),
         ("sigint_unaccounted", "{}", "0 (received, in no file)"),
         ("sigint_interrupted", "{}", "(dead letters 'interrupted': received, not answered)"),
         ("sigint_restart_exit_code", "{}", "130"),
         ("sigint_restart_ledger_balanced", "{}", "True"), ("sigint_answered_twice", "{}", "0"),
         ("sigint_paid_twice", "{}", "0 (completions - tickets answered)"),
         ("sigint_lost", "{}", "0"),
         ("priority_alone_first_response_p99_ms", "{:.0f}", "(live job alone)"),
         ("priority_beside_first_response_p99_ms", "{:.0f}", "<= alone + 2000"),
         ("priority_beside_p99_increase_ms", "{:.0f}", "<= 2000"),
         ("priority_utilization", "{:.3f}", ">= 0.95 (live + backfill)"),
         ("priority_backfill_share", "{:.3f}", "(backfill's successes / the limit)"),
         ("priority_rate_limited_fraction", "{:.4f}", "<= 0.005"),
         ("priority_lost", "{}", "0"), ("priority_duplicated", "{}", "0"))
#: Every key the JSON carries in every mode (the smoke test checks them).
FIGURES = tuple(key for key, _, _ in _ROWS)
_LEDGER = ("read", "succeeded", "dead_lettered", "written_results", "written_dead_letters",
           "cache_hits", "dead_letter_reasons", "ledger_balanced", "streaming")


class Publisher(threading.Thread):
    """Publishes ``tickets`` (each with a unique ``id``) to ``topic`` of ``server`` (a started
    ``tests.pubsub_server.PubsubServer``) at ``rate`` per second, on a fixed schedule."""

    def __init__(self, server, topic: str, rate: float, tickets: Iterator[dict]):
        super().__init__(name="publisher", daemon=True)
        self._server, self._topic, self._rate, self._tickets = server, topic, rate, tickets
        self._halt = threading.Event()
        self._futures: list = []
        self.ids: list[str] = []
        self.started_at = self.stopped_at = 0.0

    def warm_up(self) -> None:
        """Publishes one ticket now and waits until the server has it."""
        ticket = next(self._tickets)
        self._server.publish(self._topic, ticket)
        self.ids.append(ticket["id"])

    def run(self) -> None:
        client = self._server.publisher()
        self.started_at = time.time()
        start, sent = time.monotonic(), 0
        while not self._halt.wait(max(0.0, start + sent / self._rate - time.monotonic())):
            ticket = next(self._tickets)
            self._futures.append(client.publish(self._topic, json.dumps(ticket).encode()))
            self.ids.append(ticket["id"])
            sent += 1
        self.stopped_at = time.time()

    def finish(self, accepted: bool = True) -> list[str]:
        """Stops publishing; returns every id published (once the server has ``accepted`` every
        message: the client's exception if one was not)."""
        self._halt.set()
        if self.is_alive():
            self.join()
        for future in self._futures if accepted else ():
            future.result(timeout=30)
        return list(self.ids)

    def offered_per_sec(self) -> float:
        """Messages per second while publishing (the warm-up ticket apart)."""
        return (len(self.ids) - 1) / max(1e-9, self.stopped_at - self.started_at)


def _records(output: Path, basename: str) -> list[dict]:
    """Every record of the job's finished ``BASENAME-*.jsonl`` files."""
    records = []
    for path in sorted(glob.glob(str(output / f"{basename}-*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def _first_response_ms(result: dict) -> float:
    return round((parse_utc(result["finished_at"]) - result["origin"]["received_at"]) * 1000, 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile of ``values``, as the report's; None when empty."""
    return quantile(list(values), q) if values else None


def accounting(published: Sequence[str], outputs: Sequence[Path]) -> dict[str, Any]:
    """Published ids against what the jobs writing to ``outputs`` wrote: ``results`` and
    ``dead_letters`` (records), ``answered`` (distinct ids in either), ``lost`` (published ids in
    neither), ``duplicated`` (result lines beyond the first of their id)."""
    results = [r for out in outputs for r in _records(out, "results")]
    dead = [d for out in outputs for d in _records(out, "dead_letter")]
    result_ids = [r["id"] for r in results]
    seen = set(result_ids) | {d["id"] for d in dead}
    return {"results": results, "dead_letters": dead, "answered": len(seen),
            "lost": len(set(published) - seen),
            "duplicated": len(result_ids) - len(set(result_ids))}


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, job: Job,
              pause: float = 0.2) -> None:
    """Polls ``predicate`` every ``pause`` seconds; RuntimeError if ``job`` exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if job.process.poll() is not None:
            raise RuntimeError(f"job {job.name} exited {job.process.returncode}: "
                               f"{job.log_path.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(pause)


def _ledger(summary: dict) -> dict:
    return {key: summary.get(key) for key in _LEDGER}


def interrupt(job: Job, timeout: float = 120) -> tuple[int, dict]:
    """SIGINT to the job's driver (the drain); returns its exit code and ``summary.json``.

    Raises:
      RuntimeError: when it has not exited within ``timeout``.
    """
    job.process.send_signal(signal.SIGINT)
    try:
        code = job.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"job {job.name} still running {timeout:.0f} s after SIGINT") \
            from None
    path = job.output / "summary.json"
    return code, json.loads(path.read_text()) if path.exists() else {}


class Scenario:
    """One scenario's simulator, subscription, response store, publisher (at ``fraction`` of the
    limit) and jobs; a job a failure left running is stopped on exit.
    """

    def __init__(self, bench: Bench, sizes: Sizes, server, name: str, fraction: float):
        from tests.pubsub_server import unique_name  # pylint: disable=import-outside-toplevel
        from tools.ticketgen import generate  # pylint: disable=import-outside-toplevel
        self.bench, self.sizes, self.name = bench, sizes, name
        self.limit = sizes.rpm / 60.0
        topic = server.create_topic(unique_name(f"{name}-tickets"))
        self.subscription = server.create_subscription(topic, unique_name(f"{name}-job"))
        # A store of its own: a kept --workdir must not answer from a former run's.
        self.store = bench.workdir / f"store-{name}-{time.time_ns()}"
        self.publisher = Publisher(server, topic, self.limit * fraction,
                                   generate(10_000_000, seed=1))
        self.jobs: list[Job] = []
        self.samples: list[tuple[float, int, int]] = []
        self.sim: Simulator | None = None

    def __enter__(self) -> Scenario:
        self.sim = Simulator("--rpm", str(self.sizes.rpm), "--burst_secs", "1",
                             *_latency_flags())
        return self

    def job(self, *flags: str) -> Job:
        """Starts the scenario's next streaming job (``NAME-1``, ``NAME-2``, ...) with ``flags``
        beside the common ones."""
        job = Job.start(f"{self.name}-{len(self.jobs) + 1}", [
            "--input_subscription", self.subscription, "--base_url", self.sim.base_url,
            "--requests_per_minute", str(self.sizes.rpm),
            "--window_secs", f"{self.sizes.file_window_secs:g}",
            "--response_store", str(self.store), "--progress_interval_secs", "5", *flags],
            self.bench.workdir)
        self.jobs.append(job)
        return job

    def completions(self) -> int:
        return self.sim.stats()["successful_completions"]

    def warm_up_then_publish(self) -> None:
        """One ticket published and answered (the job is up and pulling); then the publisher."""
        before = self.completions()
        self.publisher.warm_up()
        _wait_for(lambda: self.completions() > before, 120, "the warm-up ticket's answer",
                  self.jobs[-1])
        self.publisher.start()

    def sample(self) -> int:
        """Records (time, published, simulator successes); returns the backlog (their gap)."""
        self.samples.append((time.time(), len(self.publisher.ids), self.completions()))
        return self.samples[-1][1] - self.samples[-1][2]

    def watch(self, seconds: float) -> None:
        """Samples every second for ``seconds``."""
        end = time.monotonic() + seconds

        def over() -> bool:
            self.sample()
            return time.monotonic() >= end - 0.5

        _wait_for(over, seconds + 60, "the window's end", self.jobs[-1], pause=1.0)

    def all_written(self, published: Sequence[str], timeout: float = 120) -> dict[str, Any]:
        """Waits until every published id is in a finished file; returns :func:`accounting`."""
        found: dict[str, Any] = {}

        def done() -> bool:
            found.update(accounting(published, [job.output for job in self.jobs]))
            return found["lost"] == 0

        _wait_for(done, timeout, "every published ticket in a result or dead-letter file",
                  self.jobs[-1])
        return found

    def __exit__(self, *exc) -> None:
        self.publisher.finish(accepted=False)
        for job in self.jobs:
            for _ in range(2):  # a drain, then a stop at once; a kill would leave its Prism
                if job.process.poll() is None:
                    job.process.send_signal(signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        job.process.wait(45)
            job.kill()
        self.sim.__exit__(*exc)


def scenario_steady(bench: Bench, sizes: Sizes, server) -> dict[str, Any]:
    """Point 1: half the limit offered; first response time, nothing lost or duplicated."""
    bench.log(f"  steady: {sizes.steady_fraction:.0%} of the limit for {sizes.window_secs:g} s")
    with Scenario(bench, sizes, server, "steady", sizes.steady_fraction) as run:
        run.job()
        run.warm_up_then_publish()
        run.watch(sizes.window_secs)
        published = run.publisher.finish()
        found = run.all_written(published)
        code, summary = interrupt(run.jobs[0])
    window = set(published[1:])  # not the warm-up ticket
    times = [_first_response_ms(r) for r in found["results"] if r["id"] in window]
    first = summary.get("streaming") or {}
    bench.log(f"    steady: {len(published)} published, exit {code}, first response p50 "
              f"{percentile(times, 0.5)} ms, p99 {percentile(times, 0.99)} ms")
    return {"steady_first_response_p50_ms": percentile(times, 0.5),
            "steady_first_response_p99_ms": percentile(times, 0.99),
            "steady_summary_first_response_p50_ms": first.get("first_response_ms_p50"),
            "steady_summary_first_response_p99_ms": first.get("first_response_ms_p99"),
            "steady_lost": found["lost"], "steady_duplicated": found["duplicated"],
            "details_steady": {
                "offered_per_sec": run.publisher.offered_per_sec(), "published": len(published),
                "window_tickets": len(times), "first_response_ms_p90": percentile(times, 0.9),
                "first_response_ms_max": max(times, default=None), "exit_code": code,
                "summary": _ledger(summary)}}


def scenario_overload(bench: Bench, sizes: Sizes, server) -> dict[str, Any]:
    """Point 2: 150 % of the limit offered for the window, then nothing: the sender stays at the
    limit while backlogged, the backlog drains to 0, nothing is lost."""
    bench.log(f"  overload: {sizes.overload_fraction:.0%} of the limit for "
              f"{sizes.window_secs:g} s, then nothing")
    with Scenario(bench, sizes, server, "overload", sizes.overload_fraction) as run:
        run.job()
        run.warm_up_then_publish()
        run.watch(sizes.window_secs)
        published = run.publisher.finish()
        at_stop = run.sample()
        timeout = sizes.window_secs * sizes.overload_fraction + 120

        def drained() -> bool:  # every ticket paid for, or (dead letters) every one written
            return run.sample() <= 0 or not accounting(published, [run.jobs[0].output])["lost"]

        _wait_for(drained, timeout, "the backlog to drain", run.jobs[0], pause=1.0)
        drained_at = time.time()
        found = run.all_written(published)
        stats = run.sim.stats()
        code, summary = interrupt(run.jobs[0])
    started, samples = run.publisher.started_at, run.samples
    # Backlogged: from 5 s into the window (the first answers wait for the buffering and a
    # latency) to the last sample with at least two seconds of work left.
    end = max((t for t, sent, ok in samples if sent - ok >= 2 * run.limit), default=started)
    window = provider_window(stats, started + 5, end)
    peak = max((sent - ok for _, sent, ok in samples), default=0)
    bench.log(f"    overload: {len(published)} published, backlog peak {peak}, "
              f"{window['ok_per_sec']:.2f} ok/s over {window['seconds']} backlogged s, "
              f"{stats['rate_limited']} 429s of {stats['requests']}, exit {code}")
    return {"overload_utilization": window["ok_per_sec"] / run.limit,
            "overload_rate_limited_fraction": stats["rate_limited"] / max(1, stats["requests"]),
            "overload_backlog_peak": peak, "overload_backlog_at_stop": at_stop,
            "overload_backlog_end": len(published) - found["answered"],
            "overload_drain_secs": round(drained_at - run.publisher.stopped_at, 1),
            "overload_lost": found["lost"], "overload_duplicated": found["duplicated"],
            "details_overload": {
                "offered_per_sec": run.publisher.offered_per_sec(), "published": len(published),
                "backlogged_secs": window["seconds"], "ok_by_second": window["ok_by_second"],
                "requests": stats["requests"], "rate_limited": stats["rate_limited"],
                "rate_limited_at_secs": [round(stats["started_at"] + b["t"] - started)
                                         for b in stats["per_second"] if b["rate_limited"]],
                "exit_code": code, "summary": _ledger(summary),
                # (seconds since publishing started, published - answered)
                "backlog_by_second": [(round(t - started), sent - ok)
                                      for t, sent, ok in samples]}}


def scenario_sigint(bench: Bench, sizes: Sizes, server) -> dict[str, Any]:
    """Point 3: SIGINT halfway through a half-limit run, then a restart on the same
    subscription and response store."""
    bench.log(f"  sigint: {sizes.steady_fraction:.0%} of the limit for {sizes.window_secs:g} s, "
              "SIGINT halfway, a restart")
    with Scenario(bench, sizes, server, "sigint", sizes.steady_fraction) as run:
        first = run.job()
        run.warm_up_then_publish()
        run.watch(sizes.window_secs / 2)
        code, summary = interrupt(first)
        mine = accounting([], [first.output])
        second = run.job()  # the publisher goes on meanwhile
        run.watch(run.publisher.started_at + sizes.window_secs - time.time())
        published = run.publisher.finish()
        found = run.all_written(published)
        again, summary2 = interrupt(second)
        stats = run.sim.stats()
    theirs = accounting([], [second.output])
    ids_first = {r["id"] for r in mine["results"]}
    ids_second = {r["id"] for r in theirs["results"]}
    answered = {r["id"] for r in found["results"]}
    interrupted = sum(1 for d in mine["dead_letters"] if d.get("reason") == "interrupted")
    bench.log(f"    sigint: first job exit {code}, read {summary.get('read')}, wrote "
              f"{mine['answered']} ({interrupted} interrupted); restart exit {again}, "
              f"answered {len(ids_second)}; simulator {stats['successful_completions']} "
              f"completions for {len(answered)} answered tickets")
    return {"sigint_exit_code": code,
            "sigint_ledger_balanced": summary.get("ledger_balanced"),
            "sigint_unaccounted": (summary.get("read") or 0) - mine["answered"],
            "sigint_interrupted": interrupted,
            "sigint_restart_exit_code": again,
            "sigint_restart_ledger_balanced": summary2.get("ledger_balanced"),
            "sigint_answered_twice": (len(ids_first & ids_second) + mine["duplicated"]
                                      + theirs["duplicated"]),
            "sigint_paid_twice": stats["successful_completions"] - len(answered),
            "sigint_lost": found["lost"],
            "details_sigint": {
                "published": len(published), "first": _ledger(summary),
                "restart": _ledger(summary2),
                "successful_completions": stats["successful_completions"],
                "answered_tickets": len(answered)}}


def _window_p99(results: Sequence[dict], ids: Sequence[str]) -> float | None:
    chosen = set(ids)
    return percentile([_first_response_ms(r) for r in results if r["id"] in chosen], 0.99)


def scenario_priority(bench: Bench, sizes: Sizes, server) -> dict[str, Any]:
    """Point 4: a live job on ``high`` alone, then beside a backfill on one shared quota."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.gate import JobGate
    from benchmarks.quota import _redis
    bench.log(f"  priority: live job (high) offered {sizes.live_fraction:.0%} of the limit, "
              f"{sizes.window_secs:g} s alone, then {sizes.window_secs:g} s beside a backfill")
    redis = _redis(bench.workdir / f"redis-priority-{time.time_ns()}")
    quota = ["--shared_quota", redis.url, "--quota_key", f"stream-{time.time_ns()}"]
    backfill_tickets = int((2 * sizes.window_secs + 120) * sizes.rpm / 60)
    try:
        with Scenario(bench, sizes, server, "priority", sizes.live_fraction) as run, \
                JobGate(run.sim.base_url) as gate:
            live = run.job("--quota_priority", "high", *quota)
            run.warm_up_then_publish()
            run.watch(sizes.window_secs)
            alone_ids = list(run.publisher.ids[1:])
            backfill = Job.start("priority-backfill", [
                "--input", str(bench.tickets(backfill_tickets)),
                "--base_url", gate.base_url("backfill"),
                "--requests_per_minute", str(sizes.rpm), *quota], bench.workdir)
            try:
                _wait_for(lambda: gate.first_answer("backfill") is not None, 300,
                          "the backfill's first answer", backfill)
                run.watch(sizes.settle_secs)
                start, first_beside = time.time(), len(run.publisher.ids)
                run.watch(sizes.window_secs)
                end, last_beside = time.time(), len(run.publisher.ids)
                backfill_ran = backfill.process.poll() is None
            finally:
                backfill.kill()
            published = run.publisher.finish()
            found = run.all_written(published)
            stats = run.sim.stats()
            code, summary = interrupt(live)
            mine = gate.counts("backfill", start, end)
    finally:
        redis.stop()
    window = provider_window(stats, start, end)
    alone = _window_p99(found["results"], alone_ids)
    beside = _window_p99(found["results"], published[first_beside:last_beside])
    increase = None if alone is None or beside is None else beside - alone
    bench.log(f"    priority: first response p99 alone {alone} ms, beside {beside} ms; "
              f"{window['ok_per_sec']:.2f} ok/s over {window['seconds']} s beside (backfill "
              f"{mine['ok'] / max(1e-9, end - start):.2f}); {stats['rate_limited']} 429s of "
              f"{stats['requests']}; live exit {code}")
    if not backfill_ran:
        bench.log("    priority: WARNING the backfill ended inside the window")
    return {"priority_alone_first_response_p99_ms": alone,
            "priority_beside_first_response_p99_ms": beside,
            "priority_beside_p99_increase_ms": increase,
            "priority_utilization": window["ok_per_sec"] / run.limit,
            "priority_backfill_share": mine["ok"] / max(1e-9, end - start) / run.limit,
            "priority_rate_limited_fraction": stats["rate_limited"] / max(1, stats["requests"]),
            "priority_lost": found["lost"], "priority_duplicated": found["duplicated"],
            "details_priority": {
                "offered_per_sec": run.publisher.offered_per_sec(), "published": len(published),
                "alone_tickets": len(alone_ids), "beside_tickets": last_beside - first_beside,
                "window_secs": window["seconds"], "ok_by_second": window["ok_by_second"],
                "backfill_window": mine, "backfill_ran_through": backfill_ran,
                "requests": stats["requests"], "rate_limited": stats["rate_limited"],
                "rate_limited_at_secs": [
                    round(stats["started_at"] + b["t"] - run.publisher.started_at)
                    for b in stats["per_second"] if b["rate_limited"]],
                "exit_code": code, "summary": _ledger(summary)}}


SCENARIOS = {"steady": scenario_steady, "overload": scenario_overload,
             "sigint": scenario_sigint, "priority": scenario_priority}


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    return figures_lib.format_table(_ROWS, figures)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the scenarios, prints the table, writes the JSON."""
    import pytest  # pylint: disable=import-outside-toplevel

    from tests.pubsub_server import PubsubServer  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="40 s windows (~3 min)")
    mode.add_argument("--smoke", action="store_true",
                      help="windows of seconds: every key, no figure worth reading (CI)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep the jobs' outputs and logs here (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "default"
    sizes = {"quick": QUICK, "smoke": SMOKE}.get(mode_name, DEFAULT)

    figures = figures_lib.start(mode_name)
    try:
        server = PubsubServer()  # started by the with below
    except pytest.skip.Exception as exc:  # its helper skips a test; a benchmark fails
        raise RuntimeError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="ticketflow-stream-") as tmp, server, \
            server.activated():  # the jobs inherit PUBSUB_EMULATOR_HOST
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, log=log)
        for name in args.only or list(SCENARIOS):
            figures_lib.note_load(figures, name)
            figures.update(SCENARIOS[name](bench, sizes, server))
    return figures_lib.finish(figures, format_table, FIGURES, args.json, complete=not args.only)


if __name__ == "__main__":
    sys.exit(main())
