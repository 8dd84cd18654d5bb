"""The circuit breaker's decisions, driven by a fake clock (no sleeping)."""

import asyncio
import itertools
import pickle

import pytest

from tests import llm_fakes
from transforms.limits.breaker import (CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker,
                                OutageTooLong)


def FakeClock():  # pylint: disable=invalid-name
    return llm_fakes.FakeClock(500.0)


def make(clock, **policy):
    transitions = []
    breaker = CircuitBreaker(BreakerPolicy(**policy), clock=clock, sleep=clock.sleep,
                             on_transition=lambda old, new, now: transitions.append((old, new)))
    return breaker, transitions


def fail_until_open(breaker, clock, kind="connection_error"):
    for _ in range(100):
        if breaker.state != CLOSED:
            return
        assert breaker.before_send() == 0
        breaker.on_failure(kind, clock.now)
        clock.now += 0.01
    raise AssertionError("never opened")


def test_stays_closed_when_failures_are_a_minority_or_not_outages():
    clock = FakeClock()
    breaker, _ = make(clock)
    for i in range(200):
        assert breaker.before_send() == 0
        if i % 2:
            breaker.on_failure("server_error", clock.now)
        else:
            breaker.on_success(clock.now)
        clock.now += 0.1
    # 429s, 400s and invalid output are answers of a provider that is up.
    for kind in ("rate_limited", "bad_request", "invalid_output", "content_filter"):
        for _ in range(30):
            breaker.on_failure(kind, clock.now)
    assert breaker.state == CLOSED and breaker.opens == 0


def test_opens_on_most_recent_outage_failures_then_lets_one_probe_through_at_growing_intervals():
    clock = FakeClock()
    breaker, transitions = make(clock, max_probe_secs=8)
    for kind in ("connection_error", "timeout", "server_error") * 2:
        breaker.on_success(clock.now)
        breaker.on_failure(kind, clock.now)
    assert breaker.state == CLOSED  # 6 of 12: not most
    fail_until_open(breaker, clock)
    assert breaker.state == OPEN and breaker.outage_started_at is not None
    opened = breaker.outage_started_at
    probe_times = []
    for _ in range(6):
        wait = breaker.before_send()
        assert wait > 0
        assert breaker.before_send() == pytest.approx(wait)  # asking again does not reset it
        clock.now += wait
        assert breaker.before_send() == 0  # the probe
        probe_times.append(clock.now - opened)
        for _ in range(5):  # everyone else keeps waiting while the probe is in flight
            assert 0 < breaker.before_send() <= breaker.policy.poll_secs
        assert breaker.state == HALF_OPEN
        clock.now += 0.2
        breaker.on_failure("connection_error", clock.now - 0.2)
    gaps = [b - a for a, b in itertools.pairwise(probe_times)]
    assert probe_times[0] == pytest.approx(1.0)
    assert gaps == pytest.approx([2.2, 4.2, 8.2, 8.2, 8.2])  # doubling from 1 s, capped at 8
    assert breaker.probes == 6 and breaker.opens == 1
    assert transitions[:3] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]


def test_a_successful_probe_closes_and_the_outage_is_accounted():
    clock = FakeClock()
    breaker, transitions = make(clock)
    fail_until_open(breaker, clock)
    started = breaker.outage_started_at
    clock.now += 1.0
    assert breaker.before_send() == 0
    sent = clock.now
    clock.now += 0.5
    outage = clock.now - started
    assert breaker.outage_secs() == pytest.approx(outage)
    breaker.on_success(sent)
    assert breaker.state == CLOSED and breaker.outage_started_at is None
    assert breaker.outage_secs() == 0
    assert breaker.open_secs == pytest.approx(outage)
    clock.now += 10
    assert breaker.open_secs == pytest.approx(outage)  # closed time is not counted
    assert transitions[-1] == (HALF_OPEN, CLOSED)
    # A fresh window: one more failure does not reopen it.
    breaker.on_failure("timeout", clock.now)
    assert breaker.state == CLOSED and breaker.before_send() == 0


def test_stragglers_sent_before_the_opening_do_not_decide():
    clock = FakeClock()
    breaker, _ = make(clock)
    before = clock.now
    fail_until_open(breaker, clock)
    breaker.on_success(before)  # answered late, sent before the outage was noticed
    assert breaker.state == OPEN
    clock.now += 1.0
    assert breaker.before_send() == 0
    probe_sent = clock.now
    breaker.on_failure("server_error", before)  # another straggler, while the probe flies
    assert breaker.state == HALF_OPEN
    breaker.on_success(probe_sent)
    assert breaker.state == CLOSED
    for _ in range(30):  # requests of the outage timing out now must not reopen it
        breaker.on_failure("timeout", before)
    assert breaker.state == CLOSED
    for _ in range(30):  # but new ones failing do
        breaker.on_failure("timeout", clock.now)
    assert breaker.state == OPEN and breaker.opens == 2


def test_a_probe_never_reported_is_replaced_after_its_timeout():
    clock = FakeClock()
    breaker, _ = make(clock, probe_timeout_secs=10)
    fail_until_open(breaker, clock)
    clock.now += 1.0
    assert breaker.before_send() == 0
    clock.now += 9.9
    assert breaker.before_send() > 0
    clock.now += 0.1  # the probe's caller was cancelled: it counts as failed (next in 2 s)
    assert breaker.before_send() == pytest.approx(2.0)
    clock.now += 2.0
    assert breaker.before_send() == 0 and breaker.probes == 2


def test_old_failures_leave_the_window():
    clock = FakeClock()
    breaker, _ = make(clock, window_secs=30)
    for _ in range(9):
        breaker.on_failure("connection_error", clock.now)
    clock.now += 31
    breaker.on_failure("connection_error", clock.now)
    assert breaker.state == CLOSED


def test_wait_sleeps_until_the_probe_and_counts_the_time():
    clock = FakeClock()
    breaker, _ = make(clock)

    async def go():
        assert await breaker.wait() == 0  # closed: no wait
        fail_until_open(breaker, clock)
        return await breaker.wait(max_outage_secs=900)

    waited = asyncio.run(go())
    assert waited == pytest.approx(1.0, abs=0.02)
    assert breaker.state == HALF_OPEN  # this caller is the probe


def test_wait_gives_up_after_the_maximum_outage():
    clock = FakeClock()
    breaker, _ = make(clock, max_probe_secs=30)

    async def go():
        fail_until_open(breaker, clock)
        waits = 0
        while True:
            await breaker.wait(max_outage_secs=100)
            waits += 1
            breaker.on_failure("connection_error", clock.now)

    with pytest.raises(OutageTooLong) as info:
        asyncio.run(go())
    assert info.value.outage_secs == pytest.approx(100, abs=0.01)
    assert breaker.outage_secs() == pytest.approx(100, abs=0.01)
    assert pickle.loads(pickle.dumps(info.value)).outage_secs == info.value.outage_secs
    assert max(clock.sleeps) <= 30


def test_policy_validation():
    with pytest.raises(ValueError):
        BreakerPolicy(failure_ratio=0)
    with pytest.raises(ValueError):
        BreakerPolicy(window=5, min_outcomes=10)
