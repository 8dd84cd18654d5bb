"""A live job (``--quota_priority high``) beside a backfill on one shared quota, end to end.

Two ``python -m pipeline`` subprocesses, the simulator as the provider (``--burst_secs 1``: its
per-minute limit is enforced in one-second slices), a real ``redis-server`` as the shared quota,
and a :class:`benchmarks.gate.JobGate` in front of the simulator that tells the jobs' answers
apart. The jobs are measured while both send, then killed (no waiting for their tails).
"""

from __future__ import annotations

import time

from benchmarks.gate import JobGate
from tests.redis_server import RedisServer
from tests.test_shared_quota_e2e import _start, _tickets
from transforms.llm.limits import SHARED_PACE

RPM = 1200        # the provider's limit: 20 requests a second, enforced per second
LIVE_RPM = 240    # the live job is told a fifth of it
WINDOW_SECS = 8.0


def _kill(proc) -> str:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.logs.seek(0)
    text = proc.logs.read()
    proc.logs.close()
    return text


def test_a_high_job_keeps_its_rate_and_a_backfill_takes_the_rest(tmp_path, simulator_factory):
    sim = simulator_factory(rpm=RPM, burst_secs=1, latency_median_ms=200, latency_p99_ms=800)
    with RedisServer(tmp_path / "redis") as redis, JobGate(sim.base_url) as gate:
        common = ["--shared_quota", redis.url, "--quota_key", "e2e-priority",
                  "--max_concurrency", "48", "--requests_per_minute"]
        procs = {
            "backfill": _start(["--input", str(_tickets(tmp_path / "b.jsonl", 2000, "B")),
                                "--base_url", gate.base_url("backfill"), *common, str(RPM)],
                               tmp_path / "out-backfill"),
            "live": _start(["--input", str(_tickets(tmp_path / "l.jsonl", 200, "L")),
                            "--base_url", gate.base_url("live"), "--quota_priority", "high",
                            *common, str(LIVE_RPM)], tmp_path / "out-live"),
        }
        logs = {}
        try:
            deadline = time.monotonic() + 60
            while any(gate.first_answer(name) is None for name in procs):
                assert time.monotonic() < deadline, "a job never reached the provider"
                assert all(p.poll() is None for p in procs.values()), "a job ended early"
                time.sleep(0.1)
            time.sleep(1.5)                      # the live job's first second is its start-up
            start = time.time()
            time.sleep(WINDOW_SECS)
            end = time.time()
            ended = [name for name, p in procs.items() if p.poll() is not None]
        finally:
            for name, proc in procs.items():
                logs[name] = _kill(proc)
        counts = {name: gate.counts(name, start, end) for name in procs}
        totals = {name: gate.totals(name) for name in procs}
        asked = {name: gate.asked(name, start, end) for name in procs}
    assert not ended, {name: logs[name][-2000:] for name in ended}
    # Rates of the requests reaching the provider, first to last in the window (answers would
    # add the latency's jitter to a count of a few seconds).
    every = sorted(asked["live"] + asked["backfill"])
    live = (len(asked["live"]) - 1) / (asked["live"][-1] - asked["live"][0])
    together = (len(every) - 1) / (every[-1] - every[0])
    refused = sum(c["rate_limited"] for c in counts.values()) / max(1, len(every))
    limit = RPM / 60.0
    print(f"window {end - start:.1f} s: live {live:.2f}/s (told {LIVE_RPM / 60:.2f}/s), "
          f"together {together / limit:.3f} of the limit; answers {counts}; totals {totals}")
    # The live job gets its own rate, as alone (it paces at SHARED_PACE of what it is told) ...
    assert abs(live - LIVE_RPM / 60.0 * SHARED_PACE) <= 0.1 * LIVE_RPM / 60.0, asked["live"]
    assert counts["backfill"]["ok"] > 0 and counts["live"]["ok"] > 0
    # ... and the backfill the rest: together at least 0.95 of the limit answered.
    assert together * (1 - refused) >= 0.95 * limit, counts
    requests = sum(t["requests"] for t in totals.values())
    rate_limited = sum(t["rate_limited"] for t in totals.values())
    assert rate_limited <= 0.02 * requests, totals
    assert "Traceback" not in logs["live"] + logs["backfill"]
