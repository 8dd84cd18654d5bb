"""The limiter's arithmetic, driven by a fake clock (no sleeping).

The provider in the pacing tests is the simulator's own rolling-window limiter
(:class:`simulator.limits.RateLimiter` with one-second slices) on the same fake clock.
"""

import asyncio
import heapq
import math
import random

import pytest

from simulator.limits import RateLimiter
from transforms.limits.limiter import (AdaptiveRateLimiter, AdmissionLog, LimitPolicy, SliceWindow,
                                  TokenBucket)
from transforms.llm.providers.openai import limit_headers, parse_duration


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now
        self.slept = []

    def __call__(self):
        return self.now

    async def sleep(self, secs):
        self.slept.append(secs)
        self.now += secs


def run_sends(limiter, clock, n, tokens=0):
    """Acquires n times; returns the clock time at which each acquisition succeeded."""
    times = []

    async def go():
        for _ in range(n):
            await limiter.acquire(tokens)
            times.append(clock.now)

    asyncio.run(go())
    return times


def test_request_rate_is_never_exceeded_over_any_window():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep)
    times = run_sends(limiter, clock, 200)
    # 200 requests at 10/s (less the 1% margin) take ~20 s; any 1-second window holds at most
    # 10: a second never gets an 11th request (before the slice window: up to 12).
    assert times[-1] - times[0] == pytest.approx(19.9 * 1.01, abs=0.2)
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= 10


def test_token_rate_limits_large_requests_with_debt():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=0, tokens_per_sec=100, clock=clock,
                                  sleep=clock.sleep)
    times = run_sends(limiter, clock, 11, tokens=500)
    # 500-token requests at 100 tokens/s: one every 5 s after the first.
    assert times[-1] - times[0] == pytest.approx(50, abs=0.5)


def test_unlimited_never_waits():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep)
    run_sends(limiter, clock, 1000, tokens=10_000)
    assert clock.slept == []


def test_isolated_short_429_is_a_slice_edge_pause_without_cut():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=20, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep)
    run_sends(limiter, clock, 5)
    margin = limiter.margin
    limiter.on_rate_limited(retry_after=0.04)
    assert limiter.factor == 1.0 and limiter.requests_per_sec == 20  # no cut to 0.7x
    assert limiter.slice_edges == 1 and limiter.margin > margin  # but a wider jitter margin
    assert limiter.reserve(1) == pytest.approx(0.04)
    limiter.on_rate_limited(retry_after=0.04)  # arrived during the pause: sent before it
    assert limiter.stale_429s == 1 and limiter.factor == 1.0
    clock.now += 0.04
    for _ in range(2000):
        limiter.on_success()
    assert limiter.margin == pytest.approx(limiter.policy.slice_margin_secs, rel=0.01)


def test_repeated_short_429s_mean_a_lower_limit():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=20, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep)
    for _ in range(3):
        run_sends(limiter, clock, 10)
        clock.now += 0.5
        limiter.on_rate_limited(retry_after=0.05)
    assert limiter.slice_edges == 2 and limiter.limit_signals == 1
    assert limiter.factor < 1.0


def test_long_retry_after_pauses_cuts_and_probes_back():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep)
    limiter.on_rate_limited(retry_after=30.0)
    assert limiter.limit_signals == 1
    assert limiter.factor == pytest.approx(limiter.policy.decrease)  # nothing known: halve
    assert limiter.requests_per_sec == pytest.approx(5)
    assert limiter.reserve(1) == pytest.approx(30.0)
    clock.now += 30.0
    successes = 0
    while limiter.factor < 1.0:
        run_sends(limiter, clock, 1)
        limiter.on_success()
        successes += 1
    # Fast (1%) to just under the refused rate, then slowly (0.05%) to the configured one.
    assert 100 < successes < 300
    assert limiter.requests_per_sec == pytest.approx(10)


def test_bare_429s_pause_everyone_longer_each_time_until_a_success():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep)
    pauses = []
    for _ in range(5):
        limiter.on_rate_limited(retry_after=None)
        pauses.append(limiter.reserve(1))
        clock.now = limiter.paused_until
    assert pauses == pytest.approx([0.5, 1, 2, 4, 8])
    limiter.on_success()
    limiter.on_rate_limited(retry_after=None)
    assert limiter.reserve(1) == pytest.approx(0.5)


def test_factor_has_a_floor():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(10, 0, clock=clock, sleep=clock.sleep,
                                  policy=LimitPolicy(min_factor=0.2))
    for _ in range(20):
        limiter.on_rate_limited(30.0)
        clock.now = limiter.paused_until
    assert limiter.factor == pytest.approx(0.2)


def test_remaining_zero_header_pauses_until_one_requests_share_is_back():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep)
    # No limit announced: the whole reset.
    limiter.observe_limits(limit_headers({"x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "1.5s"}))
    assert limiter.reserve(1) == pytest.approx(1.5)
    limiter.observe_limits(limit_headers({"x-ratelimit-remaining-tokens": "120",
                                           "x-ratelimit-reset-tokens": "9s"}))
    assert limiter.paused_until == pytest.approx(clock.now + 1.5)
    clock.now += 2
    # 1,200 a minute, all back in 59.9 s: the next one is back in 59.9 / 1,200 s.
    limiter.observe_limits(limit_headers({"x-ratelimit-limit-requests": "1200",
                                           "x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "59.9s"}))
    assert limiter.paused_until == pytest.approx(clock.now + 59.9 / 1200)
    clock.now += 1
    limiter = AdaptiveRateLimiter(0, 1000, clock=clock, sleep=clock.sleep)
    clock.now += 1
    assert limiter.reserve(400) == 0.0  # the mean request costs 400 tokens
    limiter.observe_limits(limit_headers({"x-ratelimit-limit-tokens": "60000",
                                           "x-ratelimit-remaining-tokens": "0",
                                           "x-ratelimit-reset-tokens": "30s"}))
    assert limiter.paused_until == pytest.approx(clock.now + 30 * 400 / 60000)
    # Our own window is full as well (a minute's 1,200 sent): no news, no pause.
    limiter = AdaptiveRateLimiter(20, 0, clock=clock, sleep=clock.sleep,
                                  policy=LimitPolicy(slice_secs=60))
    for _ in range(1200):
        clock.now += 0.05
        assert limiter.reserve(0) == 0.0
    limiter.observe_limits(limit_headers({"x-ratelimit-limit-requests": "1200",
                                           "x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "59.95s"}))
    assert limiter.paused_until < clock.now


def test_correct_gives_tokens_back():
    bucket = TokenBucket(rate=10, capacity=100, now=0)
    bucket.take(50)
    bucket.give_back(30)
    assert bucket.level == pytest.approx(1 - 50 + 30)


@pytest.mark.parametrize("text,secs", [("1s", 1), ("6m0s", 360), ("120ms", 0.12),
                                       ("1h2m3.5s", 3723.5), ("2.5", 2.5), ("", None),
                                       ("soon", None)])
def test_parse_duration(text, secs):
    assert parse_duration(text) == (pytest.approx(secs) if secs is not None else None)


def test_late_wakeups_do_not_lose_rate():
    """asyncio wakes sleepers late; the owed refill must not be thrown away."""
    clock = FakeClock()

    async def late_sleep(secs):
        clock.slept.append(secs)
        clock.now += secs * 1.3 + 0.002  # every wake-up 30% + 2 ms late

    limiter = AdaptiveRateLimiter(requests_per_sec=20, tokens_per_sec=0, clock=clock,
                                  sleep=late_sleep)
    times = run_sends(limiter, clock, 400)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    # 1.5% is the slice window's jitter margin; and a late send delays the request one window
    # later (the window is exact), which the bucket's owed refill cannot make up.
    assert achieved >= 0.95 * 20
    assert achieved <= 20


def test_slice_window_waits_for_the_expiry_that_makes_room():
    window = SliceWindow(seconds=1.0, budget=10)
    window.add(0.0, 4)
    window.add(0.3, 4)
    assert window.wait_for(2, 0.5) == 0
    assert window.wait_for(5, 0.5) == pytest.approx(0.5, abs=1e-5)  # when the first 4 leave
    assert window.wait_for(9, 0.5) == pytest.approx(0.8, abs=1e-5)  # when both have left
    assert window.wait_for(50, 1.4) == 0  # too big for any window: let into an empty one
    window.add(1.4, 3)
    window.adjust(1.4, 2)  # it really cost 5
    assert window.used(1.5) == pytest.approx(5)


def test_admission_log_counts_what_was_admitted_while_we_offered_more():
    log = AdmissionLog(seconds=10, min_active_secs=2)
    assert log.admitted(0.0) is None
    for i in range(40):  # 40 sent over 4 s, 10 of them refused...
        log.grant(i * 0.1, 100)
        if i % 4 == 0:
            log.refuse(i * 0.1 + 0.01)
    log.pause(4.0, 5.0)  # ...then a pause and an idle second: not offered, not counted
    log.idle(5.0, 6.0)
    requests, tokens = log.admitted(6.0)
    assert requests == pytest.approx(30 / 4.0)
    assert tokens == pytest.approx(3000 / 4.0)
    assert log.admitted(1.0) is None  # one second of sending is too little to tell


def test_admission_log_keeps_only_its_window_however_long_the_run():
    # A run without a single 429 never asks for the estimate: the logs must not grow with it
    # (they did: ~250 bytes per request, 2.5 GB over 10M tickets).
    log = AdmissionLog(seconds=10, min_active_secs=2)
    for i in range(100_000):
        now = i * 0.05
        log.idle(now - 0.01, now)
        log.grant(now, 100)
    assert len(log._grants) <= 201 and len(log._idle) <= 201  # pylint: disable=protected-access
    assert log.grants(100_000 * 0.05) <= 201


def drive(limiter, clock, provider, costs, told_rps_429s=False, bare=False, pass_sent_at=False,
          concurrency=64, jitter=0.003, seed=1):
    """Tickets through the limiter to ``provider`` (the simulator's limiter) on a fake clock.

    Each ticket queues for the limiter the way ``acquire`` queues it (``reserve_next``), arrives ``jitter`` later, is admitted or refused (429 with the
    provider's retry-after, or none if ``bare``) and retries like transforms.retry (full jitter
    from 0.5 s, at most 6 retries). Waiters wake up to 2 ms late.

    Returns:
      (successes/s over the middle of the run, 429s / requests, dead tickets).
    """
    rng = random.Random(seed)
    events, seq = [], [0]

    def push(at, kind, data=None):
        seq[0] += 1
        heapq.heappush(events, (at, seq[0], kind, data))

    todo, waiting, attempts = list(range(len(costs))), [], {}
    state = {"in_flight": 0, "asleep": False, "requests": 0, "refused": 0, "dead": 0}
    answered = []

    def pump():
        while state["in_flight"] < concurrency and todo:
            state["in_flight"] += 1
            waiting.append(todo.pop(0))
        while waiting and not state["asleep"]:
            index, wait = limiter.reserve_next([costs[t] for t in waiting[:64]])
            if index is None:
                state["asleep"] = True
                push(clock.now + wait + 0.002 * rng.random(), "wake")
                return
            push(clock.now + jitter * rng.random(), "arrive", (waiting.pop(index), clock.now))
            state["last_sent"] = clock.now

    push(0.0 + clock.now, "wake")
    while events:
        clock.now, _, kind, data = heapq.heappop(events)
        if kind == "arrive":
            ticket, sent = data
            state["requests"] += 1
            decision = provider.acquire(costs[ticket])
            if decision.allowed:
                push(clock.now + math.exp(rng.gauss(math.log(0.3), 0.99)), "ok", data)
            else:
                state["refused"] += 1
                push(clock.now + 0.002, "429", (ticket, sent, None if bare
                                                else max(0.001, decision.retry_after)))
        elif kind == "ok":
            limiter.on_success(data[1] if pass_sent_at else None)
            answered.append(clock.now)
            state["in_flight"] -= 1
        elif kind == "429":
            ticket, sent, retry_after = data
            limiter.on_rate_limited(retry_after, sent if pass_sent_at else None)
            attempt = attempts[ticket] = attempts.get(ticket, 0) + 1
            if attempt > 6:
                state["dead"] += 1
                state["in_flight"] -= 1
            else:
                backoff = rng.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1)))
                push(clock.now + max(backoff, retry_after or 0), "retry", ticket)
        elif kind == "retry":
            waiting.append(data)
        else:
            state["asleep"] = False
        pump()
    answered.sort()
    # Until the last request was sent: the answers of the last few (log-normal latency) would
    # stretch the run by a tail that says nothing of the limiter.
    first, last = answered[0] + 2, state["last_sent"] - 1
    rate = sum(1 for t in answered if first <= t < last) / (last - first)
    return rate, state["refused"] / state["requests"], state["dead"]


def test_one_second_slices_get_exactly_their_requests():
    clock = FakeClock(0.0)
    limiter = AdaptiveRateLimiter(20, 0, clock=clock, sleep=clock.sleep)
    provider = RateLimiter(rpm=1200, burst_secs=1, clock=clock)
    rate, refused, _ = drive(limiter, clock, provider, [1] * 1500)
    assert refused == 0
    assert rate >= 0.97 * 20


def test_one_second_slices_get_their_tokens():
    rng = random.Random(1)
    costs = [min(524, max(344, round(rng.gauss(390, 25)))) for _ in range(1500)]  # as tickets
    utilization = {}
    for overtakes in (0, LimitPolicy().max_overtakes):
        clock = FakeClock(0.0)
        limiter = AdaptiveRateLimiter(0, 7500, clock=clock, sleep=clock.sleep,
                                      policy=LimitPolicy(max_overtakes=overtakes))
        provider = RateLimiter(tpm=450_000, burst_secs=1, clock=clock)
        rate, refused, _ = drive(limiter, clock, provider, costs)
        assert refused == 0
        utilization[overtakes] = rate * sum(costs) / len(costs) / 7500
    # First come, first served, the window is left ~160 tokens short on average: too few for
    # the next request (0.957). When a later request fills the room, it goes first (0.965).
    assert utilization[0] >= 0.95
    assert utilization[LimitPolicy().max_overtakes] >= max(0.96, utilization[0] + 0.005)


def test_a_provider_that_enforces_the_whole_minute_gets_it_with_a_minute_slice():
    utilization = {}
    for slice_secs in (1.0, 60.0):
        clock = FakeClock(0.0)
        limiter = AdaptiveRateLimiter(20, 0, clock=clock, sleep=clock.sleep,
                                      policy=LimitPolicy(slice_secs=slice_secs))
        provider = RateLimiter(rpm=1200, clock=clock)  # the whole minute only
        rate, refused, _ = drive(limiter, clock, provider, [1] * 3000)
        assert refused == 0
        utilization[slice_secs] = rate / 20
    # One-second slices (the default) cost the margin: 20 per 1.015 s. --rate_slice_secs 60.
    assert 0.97 <= utilization[1.0] < 0.985
    assert utilization[60.0] >= 0.995


@pytest.mark.parametrize("bare,pass_sent_at", [(True, False), (True, True), (False, False)])
def test_a_limit_five_times_too_high_is_learnt(bare, pass_sent_at):
    clock = FakeClock(0.0)
    limiter = AdaptiveRateLimiter(100, 0, clock=clock, sleep=clock.sleep)
    provider = RateLimiter(rpm=1200, burst_secs=1, clock=clock)
    rate, refused, dead = drive(limiter, clock, provider, [1] * 1500, bare=bare,
                                pass_sent_at=pass_sent_at)
    assert refused <= 0.05  # of requests sent (the target is 10%)
    assert dead == 0
    assert rate >= 0.8 * 20  # learnt, not stuck at a floor
    assert 0.15 <= limiter.factor <= 0.21  # just under the 20/s really granted


def test_correct_with_sent_at_fixes_the_slice_window():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 1000, clock=clock, sleep=clock.sleep)
    clock.now += 1.0
    assert limiter.reserve(400) == 0
    sent = clock.now
    clock.now += 0.3
    limiter.correct(-100, sent_at=sent)  # it really cost 500
    assert limiter.token_slice.used(clock.now) == pytest.approx(500)
    limiter.correct(50)  # no sent_at: the long-run bucket only
    assert limiter.token_slice.used(clock.now) == pytest.approx(500)


def test_a_gateways_bare_429_reaches_the_limiter_without_retry_after():
    """Through benchmarks.pacing's gateway (real simulator, real client): no header survives."""
    import openai

    from benchmarks.pacing import BareGateway
    from simulator import start
    from transforms import errors
    from transforms.llm.providers import openai as wire

    with start(rpm=1, burst_secs=1) as sim, BareGateway(sim.base_url) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="test", max_retries=0)
        ask = {"model": "gpt-4o-mini", "max_tokens": 8,
               "messages": [{"role": "user", "content": "Cannot log in"}]}
        answer = client.chat.completions.with_raw_response.create(**ask)
        assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit-")]
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**ask)
        client.close()
    err = wire.from_openai(info.value)
    assert isinstance(err, errors.RateLimited) and err.retry_after is None
    assert not [h for h in info.value.response.headers
                if h.lower().startswith(("x-ratelimit-", "retry-after"))]
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(10, 0, clock=clock, sleep=clock.sleep)
    limiter.on_rate_limited(err.retry_after)
    assert limiter.reserve(1) == pytest.approx(limiter.policy.bare_pause_secs)



def test_a_later_request_that_fits_goes_first_a_bounded_number_of_times():
    clock = FakeClock(0.0)
    limiter = AdaptiveRateLimiter(0, 10_000, clock=clock, sleep=clock.sleep,
                                  policy=LimitPolicy(max_overtakes=2))
    for i in range(1, 20):  # 19 x 500 tokens, one per 50 ms (the bucket): 9,500 in the window
        clock.now = 0.05 * i
        assert limiter.reserve_next([500]) == (0, 0.0)
    clock.now = 1.0
    # 500 tokens of room: not for the 800 that waits first; the largest that fits goes first.
    assert limiter.reserve_next([800, 450, 600, 480]) == (3, 0.0)
    clock.now = 1.05
    index, wait = limiter.reserve_next([800, 450, 600])  # 20 of room until 0.05 + 1.015
    assert index is None and wait == pytest.approx(0.015, abs=1e-3)
    clock.now = 1.07
    assert limiter.reserve_next([800, 450, 600]) == (1, 0.0)  # passed over a second time
    clock.now = 1.13
    # 570 of room would take the 600, but the 800 was passed over twice: now it goes first.
    index, wait = limiter.reserve_next([800, 600])
    assert index is None and wait == pytest.approx(1.165 - 1.13, abs=1e-3)
    clock.now = 1.166
    assert limiter.reserve_next([800, 600]) == (0, 0.0)


def test_without_a_token_limit_waiters_are_served_in_order_whatever_their_cost():
    clock = FakeClock(0.0)
    limiter = AdaptiveRateLimiter(20, 0, clock=clock, sleep=clock.sleep)
    clock.now = 1.0
    # A larger one would "fill the room" if costs counted; with only a request limit they do
    # not, and a retrying ticket of the largest cost must not be preferred over and over.
    assert limiter.reserve_next([300, 900, 500]) == (0, 0.0)


def test_acquire_serves_in_order_and_a_cancelled_waiter_leaves_the_queue():
    clock = FakeClock(0.0)
    limiter = AdaptiveRateLimiter(10, 0, clock=clock, sleep=clock.sleep)
    served = []

    async def one(name):
        await limiter.acquire(0)
        served.append((name, round(clock.now, 2)))

    async def go():
        tasks = [asyncio.ensure_future(one(i)) for i in range(5)]
        await asyncio.sleep(0)
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await one("after")

    asyncio.run(go())
    names = [name for name, _ in served]
    assert names == [0, 1, 3, 4, "after"]
    assert not limiter._queue


def test_a_slice_that_holds_whole_requests_is_the_window():
    """300/min is 5 a second: a 1 s window, as the provider's slice (a 2 s window let 6 into
    one slice: 429s, cuts, 0.76 of the limit); 2.5 a second would round down to 2, so it gets
    a window of 10 requests; a large share keeps the slice."""
    from transforms.limits.limiter import slice_length
    from transforms.limits.policy import LimitPolicy

    policy = LimitPolicy()
    assert slice_length(5.0, policy) == 1.0
    assert slice_length(7.2, policy) == 1.0       # 7 of 7.2: 97 % kept
    assert slice_length(2.5, policy) == 4.0       # 2 of 2.5 would lose 20 %
    assert slice_length(0.3, policy) == pytest.approx(10 / 0.3)
    assert slice_length(20.0, policy) == 1.0
