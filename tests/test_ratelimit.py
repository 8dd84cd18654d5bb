"""The limiter's arithmetic, driven by a fake clock (no sleeping)."""

import asyncio

import pytest

from transforms.ratelimit import AdaptiveRateLimiter, TokenBucket, parse_duration


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
    # 200 requests at 10/s take ~20 s; any 1-second window holds at most 10 (+2 for the bucket
    # and a late waiter's owed refill).
    assert times[-1] - times[0] == pytest.approx(19.9, abs=0.2)
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= 12


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


def test_429_pauses_and_cuts_then_recovers():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(requests_per_sec=10, tokens_per_sec=0, clock=clock,
                                  sleep=clock.sleep, decrease=0.5, increase=0.1)
    run_sends(limiter, clock, 5)
    limiter.on_rate_limited(retry_after=2.0)
    assert limiter.factor == 0.5
    assert limiter.requests.rate == 5
    before = clock.now
    run_sends(limiter, clock, 1)
    assert clock.now - before >= 2.0  # waited for retry-after
    for _ in range(10):
        limiter.on_success()
    assert limiter.factor == pytest.approx(1.0)
    assert limiter.requests.rate == pytest.approx(10)


def test_factor_has_a_floor():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(10, 0, clock=clock, sleep=clock.sleep, min_factor=0.2)
    for _ in range(20):
        limiter.on_rate_limited(None)
    assert limiter.factor == pytest.approx(0.2)


def test_remaining_zero_header_pauses_until_reset():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep)
    limiter.observe_headers({"x-ratelimit-remaining-requests": "0",
                             "x-ratelimit-reset-requests": "1.5s"})
    assert limiter.reserve(1) == pytest.approx(1.5)
    limiter.observe_headers({"x-ratelimit-remaining-tokens": "120",
                             "x-ratelimit-reset-tokens": "9s"})
    assert limiter.paused_until == pytest.approx(clock.now + 1.5)


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
    assert achieved >= 0.99 * 20
    assert achieved <= 20 * 1.01
