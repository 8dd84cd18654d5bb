"""Priorities on the shared quota: the admission script on a real ``redis-server``, driven by an
injected clock (virtual workers, seconds of traffic in a fraction of one), then the limiter in
real time."""

import asyncio
import heapq
import itertools
import math
import random
import statistics
import time
import uuid

import pytest

from tests.redis_server import RedisServer
from tests.test_quota import max_in_window
from transforms.limits import priorities
from transforms.limits.limiter import AdaptiveRateLimiter
from transforms.limits.priorities import ADMITTED, LANE_PAID, REFUSED, Admission
from transforms.limits.quota import PREFIX, SharedRateLimiter, connect
from transforms.limits.quota_scripts import gcra_step

RPS = 20.0                 # the quota: 20 requests a second, one every 50 ms
INTERVAL = 1.0 / RPS
HORIZON_US = 30e6          # what SharedRateLimiter.acquire reserves ahead
LATE = 0.0005              # every virtual wake-up is this late
# A lower priority may take a free slot this much ahead: a live request may find the next one
# just taken, and wait for the one after.
LEAD = priorities.LanePolicy().lead * INTERVAL


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


class Worker:
    """A virtual worker process: one request at a time, asking as ``acquire`` does.

    Args:
      admit: Its :class:`Admission`.
      arrivals: When its requests arrive (seconds); None: backlogged (the next one arrives as
        soon as the last may go) from ``start`` to ``stop``.
    """

    def __init__(self, admit, arrivals=None, start=0.0, stop=math.inf, tokens=0.0):
        self.admit, self.start, self.stop, self.tokens = admit, start, stop, tokens
        self.arrivals = list(arrivals) if arrivals is not None else None
        self.sent, self.waits, self.statuses = [], [], []
        self.asked_at = None
        self.lane_paid = False

    def first_ask(self):
        if self.arrivals is None:
            self.asked_at = self.start
        else:
            self.asked_at = self.arrivals.pop(0) if self.arrivals else None
        return self.asked_at

    def next_ask(self, free_at):
        """When the next request asks, once the last one may go at ``free_at`` (None: no more)."""
        if self.arrivals is None:
            self.asked_at = free_at if free_at < self.stop else None
        elif self.arrivals:
            self.asked_at = max(self.arrivals.pop(0), free_at)
        else:
            self.asked_at = None
        return self.asked_at


async def simulate(workers, until, t0=None):
    """Runs the workers on the virtual clock until ``until`` seconds (Redis's clock = t0 + t)."""
    t0 = t0 if t0 is not None else time.time() * 1e6
    order = itertools.count()
    heap = []
    for w in workers:
        first = w.first_ask()
        if first is not None:
            heap.append((first, next(order), w))
    heapq.heapify(heap)
    while heap:
        t, _, w = heapq.heappop(heap)
        if t >= until:
            continue
        status, wait_us, _ = await w.admit(w.tokens, HORIZON_US, lane_paid=w.lane_paid,
                                           now_us=t0 + t * 1e6)
        w.statuses.append((t, status))
        wait = wait_us / 1e6
        if status == ADMITTED:
            go = t + wait
            w.sent.append(go)
            w.waits.append(go - w.asked_at)
            w.lane_paid = False
            nxt = w.next_ask(go + LATE)
        else:
            w.lane_paid = w.lane_paid or status == LANE_PAID
            nxt = t + max(wait, 1e-4) + LATE
        if nxt is not None:
            heapq.heappush(heap, (nxt, next(order), w))


def admission(client, name, priority="normal", rps=RPS, tps=0.0, job=None, slack=0.1,
              lanes=priorities.LanePolicy()):
    request_us = 1e6 / rps if rps else 0.0
    tau_us = request_us or 50_000
    return Admission(client, f"{PREFIX}:quota:{{{name}}}", priority, job or uuid.uuid4().hex,
                     request_us=request_us, token_us=1e6 / tps if tps else 0.0, tau_us=tau_us,
                     spare_ms=1000 + math.ceil(slack * tau_us / 1000), slack=slack,
                     policy=lanes)


def rate(times, start, end):
    return sum(start <= t < end for t in times) / (end - start)


def every_send(*workers):
    return sorted(t for w in workers for t in w.sent)


def run(coro_factory, url):
    async def main():
        client = connect(url)
        try:
            return await coro_factory(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


# --- every job normal: nothing changes ---------------------------------------------------------

def test_every_job_normal_decides_exactly_as_before(redis_url):
    """Random asks of three workers against the script and against gcra_step (the algorithm
    before priorities), side by side: the same answers, the same TATs."""
    rng = random.Random(21)
    request_us, token_us, tau_us, slack = 1e6 / 19.4, 1e6 / 7000.0, 1e6 / 19.4, 0.1

    async def main(client):
        name = f"same-{uuid.uuid4().hex[:6]}"
        admits = [Admission(client, f"{PREFIX}:quota:{{{name}}}", "normal", f"job{i}",
                            request_us=request_us, token_us=token_us, tau_us=tau_us,
                            spare_ms=1006, slack=slack) for i in range(3)]
        # The mirror counts from t0 (floats near Redis's 1.8e15 us clock are 0.25 us apart).
        t0, tats, now, answers = round(time.time() * 1e6), [None, None], 0, []
        for _ in range(300):
            now += round(rng.uniform(0, 60_000))
            tokens = rng.choice([0, rng.uniform(50, 900)])
            weight = rng.choice([1.0, 1.0, 1.0, 1.6])
            horizon = rng.choice([0.0, HORIZON_US])
            status, wait_us, _ = await rng.choice(admits)(tokens, horizon, weight=weight,
                                                          now_us=t0 + now)
            incs = [request_us * weight, token_us * weight * tokens]
            wait, new = gcra_step(tats, incs, tau_us, now, slack, horizon)
            expected = ADMITTED if wait <= 0 or wait <= horizon else REFUSED
            answers.append(status)
            assert status == expected and abs(wait_us - math.ceil(wait)) <= 2  # rounding
            if expected == ADMITTED:
                tats = [None if t is None else float(round(t)) for t in new]
            for value, tat in zip(await client.mget(admits[0].keys[:2]), tats):
                # (A key may have expired on the real clock, sooner than on this one.)
                assert value is None or float(value) - t0 == pytest.approx(tat, abs=2)
        return answers

    answers = run(main, redis_url)
    assert answers.count(ADMITTED) > 50 and answers.count(REFUSED) > 50


# --- high first, normal takes the rest ---------------------------------------------------------

def _live_beside_backfill(url, live_priority, backfill_workers=4, secs=10.0):
    """A live worker asking a fifth of the limit (every 250 ms) beside a backlogged backfill."""
    async def main(client):
        name = f"mix-{uuid.uuid4().hex[:6]}"
        rng = random.Random(4)
        live = Worker(admission(client, name, live_priority),
                      arrivals=[0.5 + 0.25 * k + rng.uniform(0, 0.05)
                                for k in range(int((secs - 0.5) / 0.25))])
        backfill = [Worker(admission(client, name, "normal", job="backfill"))
                    for _ in range(backfill_workers)]
        await simulate([live, *backfill], until=secs)
        return live, backfill
    return run(main, url)


def test_high_keeps_its_waits_and_normal_takes_the_rest(redis_url):
    live, backfill = _live_beside_backfill(redis_url, "high")
    fifo, fifo_backfill = _live_beside_backfill(redis_url, "normal")
    waits = sorted(live.waits[4:])
    print(f"live beside 4 backfill workers: high waits mean {statistics.mean(waits) * 1e3:.1f} "
          f"ms, p99 {waits[int(0.99 * len(waits))] * 1e3:.1f} ms; normal (first come, first "
          f"served) mean {statistics.mean(fifo.waits[4:]) * 1e3:.1f} ms")
    # Every request of the live job got through, each within one interval of the limit (the
    # backfill request let through just before it, or at most LEAD before), however many
    # backfill workers wait.
    assert len(live.sent) == 38
    assert max(waits) <= INTERVAL + LEAD + 2 * LATE
    assert statistics.mean(waits) <= 0.5 * INTERVAL + LEAD + 2 * LATE
    # As one of five equal workers it waited behind the backfill's reservations.
    assert statistics.mean(fifo.waits[4:]) >= 2.5 * INTERVAL
    # The backfill took the rest: together the whole limit, never more in any second.
    sends = every_send(live, *backfill)
    assert rate(sends, 2, 10) >= 0.97 * RPS
    assert rate(live.sent, 2, 10) == pytest.approx(4.0, abs=0.15)
    assert max_in_window(sends) <= RPS + 1
    assert max_in_window(every_send(fifo, *fifo_backfill)) <= RPS + 1


def test_a_high_job_that_appears_or_leaves_moves_no_burst_and_frees_its_share(redis_url):
    """The backfill alone, then a live job at 40 % from 3 s to 6 s, then the backfill alone."""
    async def main(client):
        name = f"come-go-{uuid.uuid4().hex[:6]}"
        rng = random.Random(5)
        live = Worker(admission(client, name, "high"),
                      arrivals=[3.0 + 0.125 * k + rng.uniform(0, 0.05) for k in range(24)])
        backfill = [Worker(admission(client, name, "normal", job="backfill")) for _ in range(3)]
        await simulate([live, *backfill], until=12.0)
        return live, backfill

    live, backfill = run(main, redis_url)
    sends = every_send(*backfill)
    assert max_in_window(every_send(live, *backfill)) <= RPS + 1      # no burst, ever
    assert rate(sends, 1, 3) >= 0.97 * RPS
    assert len(live.sent) == 24 and max(live.waits[2:]) <= INTERVAL + LEAD + 2 * LATE
    assert rate(sends, 3.5, 6) == pytest.approx(RPS - 8, abs=1.0)     # the rest
    # Gone at 6 s: its share fades within a second (meter time constant 0.5 s) ...
    assert rate(sends, 7, 9) >= 0.95 * RPS
    # ... and once its meter has lapsed (3 s) the backfill reserves ahead again: no lane.
    late = [s for w in backfill for t, s in w.statuses if t >= 9.5]
    early = [s for w in backfill for t, s in w.statuses if 4 <= t < 6]
    assert LANE_PAID in early and LANE_PAID not in late


def test_low_takes_what_high_and_normal_leave(redis_url):
    async def main(client):
        name = f"three-{uuid.uuid4().hex[:6]}"
        rng = random.Random(6)
        high = Worker(admission(client, name, "high"),                         # 4/s
                      arrivals=[0.5 + 0.25 * k + rng.uniform(0, 0.05) for k in range(38)])
        normal = Worker(admission(client, name, "normal"),                     # 6/s
                        arrivals=[0.5 + k / 6 + rng.uniform(0, 0.05) for k in range(57)])
        low = [Worker(admission(client, name, "low", job="low")) for _ in range(3)]
        await simulate([high, normal, *low], until=10.0)
        return high, normal, low

    high, normal, low = run(main, redis_url)
    assert len(high.sent) == 38 and len(normal.sent) == 57
    assert statistics.mean(high.waits[4:]) <= 0.5 * INTERVAL + LEAD + 2 * LATE
    assert statistics.mean(normal.waits[4:]) <= 1.5 * INTERVAL
    sends = every_send(high, normal, *low)
    assert rate(every_send(*low), 2, 9) == pytest.approx(RPS - 10, abs=1.0)
    assert max_in_window(sends) <= RPS + 1


# --- a job that declares a lower limit than the quota's -----------------------------------------

@pytest.mark.parametrize("priority", ["normal", "high"])
def test_a_job_told_a_fifth_of_the_limit_keeps_to_it_and_the_other_takes_the_rest(
        redis_url, priority):
    async def main(client):
        name = f"declared-{priority}-{uuid.uuid4().hex[:6]}"
        small = [Worker(admission(client, name, priority, rps=RPS / 5, job="small"), stop=4.0)
                 for _ in range(2)]
        t0 = time.time() * 1e6
        await simulate(small, until=4.0, t0=t0)        # alone: its own limit is the quota's
        alone = rate(every_send(*small), 1, 4)
        small = [Worker(admission(client, name, priority, rps=RPS / 5, job="small"), start=5.0)
                 for _ in range(2)]
        full = [Worker(admission(client, name, "normal", job="full"), start=5.0)
                for _ in range(2)]
        await simulate([*small, *full], until=12.0, t0=t0)
        return alone, small, full

    alone, small, full = run(main, redis_url)
    assert alone == pytest.approx(RPS / 5, abs=0.4)
    assert rate(every_send(*small), 6, 12) == pytest.approx(RPS / 5, abs=0.3)
    assert rate(every_send(*full), 6, 12) == pytest.approx(0.8 * RPS, abs=0.6)
    assert max_in_window(every_send(*small, *full)) <= RPS + 1


def test_the_token_limit_is_shared_the_same_way(redis_url):
    """Tokens bind (600 tokens a request, 6,000 a second: 10 requests a second)."""
    async def main(client):
        name = f"tokens-{uuid.uuid4().hex[:6]}"
        live = Worker(admission(client, name, "high", rps=100, tps=6000),
                      arrivals=[0.5 + 0.5 * k for k in range(18)], tokens=600)     # 2/s
        backfill = [Worker(admission(client, name, "normal", rps=100, tps=6000), tokens=600)
                    for _ in range(3)]
        await simulate([live, *backfill], until=10.0)
        return live, backfill

    live, backfill = run(main, redis_url)
    assert len(live.sent) == 18 and statistics.mean(live.waits[2:]) <= 0.1
    assert rate(every_send(*backfill), 2, 9) == pytest.approx(8.0, abs=0.6)
    assert max_in_window(every_send(live, *backfill)) <= 11


def test_an_unknown_priority_is_refused():
    with pytest.raises(ValueError, match="high, normal, low"):
        priorities.admission_keys("b", "urgent", "j")
    with pytest.raises(ValueError):
        SharedRateLimiter(None, "q", 10, 0, AdaptiveRateLimiter(10, 0), priority="urgent")


# --- the limiter, in real time ----------------------------------------------------------------

def test_the_limiter_puts_a_high_job_first_in_real_time(redis_url):
    """Four backfill limiters (their own clients) and a live one at 20 %, 20 requests a second,
    for 3 s on the real clock: the lane answers reach acquire() and are waited through."""
    rps, secs, name = 20.0, 3.0, f"real-{uuid.uuid4().hex[:6]}"
    admitted, live_waits = [], []

    def make(priority):
        return SharedRateLimiter(connect(redis_url), name, rps, 0,
                                 AdaptiveRateLimiter(rps / 5, 0), slack=0.1, priority=priority,
                                 job=priority)

    async def backfill(lim, end):
        while time.monotonic() < end:
            await lim.acquire(1)
            admitted.append(lim.last_admitted_at)

    async def live(lim, start, end):
        rng, k = random.Random(7), 0
        start += 0.5                                  # the backfill holds its places first
        while start + k / 4 < end:                    # 4 a second, at random in each slot
            await asyncio.sleep(max(0.0, start + k / 4 + rng.uniform(0, 0.05)
                                    - time.monotonic()))
            live_waits.append(await lim.acquire(1))
            admitted.append(lim.last_admitted_at)
            k += 1

    async def main():
        limiters = [make("normal") for _ in range(4)] + [make("high")]
        start = time.monotonic() + 0.2
        end = start + secs
        await asyncio.sleep(0.2)
        await asyncio.gather(*[backfill(lim, end) for lim in limiters[:4]],
                             live(limiters[4], start, end))
        for lim in limiters:
            await lim.client.aclose()

    asyncio.run(main())
    print(f"real time: live waits mean {statistics.mean(live_waits[1:]) * 1e3:.1f} ms, max "
          f"{max(live_waits) * 1e3:.1f} ms; {len(admitted)} admitted in {secs} s at {rps}/s")
    assert len(live_waits) == 10
    # The first found the backfill's four places reserved (no high priority had asked yet);
    # from then on, the backfill takes only free slots.
    assert live_waits[0] <= 5.5 / rps
    assert statistics.mean(live_waits[1:]) <= 1.0 / rps             # alone: ~0; FIFO: ~4 / rps
    assert len(admitted) >= 0.8 * rps * secs                        # (a loaded box wakes late)
    assert max_in_window(admitted) <= rps + 1


# --- the flag -----------------------------------------------------------------------------------

def test_the_flag_reaches_the_shared_limiter_with_the_run_as_its_job():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import config as config_lib
    from transforms.llm.limits import shared_limits

    argv = ["--input", "t.jsonl", "--output", "out", "--simulate", "--requests_per_minute", "600"]
    assert config_lib.from_options(PipelineOptions(argv)).llm.quota_priority == "normal"
    config = config_lib.from_options(PipelineOptions(
        argv + ["--quota_priority", "low", "--shared_quota", "redis://127.0.0.1:1/0"]))
    assert config.llm.quota_priority == "low"
    assert config_lib.redacted(config)["llm"]["quota_priority"] == "low"

    async def build():
        limits = shared_limits(config.llm, "q")
        await limits.aclose()
        return limits.limiter

    limiter = asyncio.run(build())
    assert limiter.priority == "low"
    assert f"{PREFIX}:quota:{{q}}:job:{config.run_id}:rpm" in limiter._admit.keys
    assert limiter._admit.keys[-4:] == [f"{PREFIX}:quota:{{q}}:{kind}:{name}"
                                        for name in ("high", "normal")
                                        for kind in ("meter", "waiting")]


def test_high_or_low_without_a_shared_quota_exits_2(run_pipeline, tmp_path):
    result = run_pipeline("--input", str(tmp_path / "none.jsonl"), "--simulate", "--quiet",
                          "--quota_priority", "high", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "ticketflow: error: --quota_priority high orders the jobs on one shared quota: pass "
        "--shared_quota redis://HOST:PORT (and the same --quota_key as the other jobs) too, or "
        "drop it."]
    assert not result.output.exists()
