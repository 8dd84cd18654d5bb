"""Retry decisions (pure) and the tenacity policy, with recorded sleeps."""

import asyncio
import random

import pytest

from transforms import errors
from transforms.llm.providers import openai as wire
from transforms.retry import RetryPolicy, is_retryable


@pytest.mark.parametrize("status,code,retryable", [
    (408, None, True), (409, None, True), (429, "rate_limit_exceeded", True), (500, None, True),
    (502, None, True), (503, "overloaded", True), (504, None, True),
    (400, "context_length_exceeded", False), (400, "content_filter", False), (400, None, False),
    (401, "invalid_api_key", False), (403, None, False), (404, None, False), (422, None, False),
])
def test_retry_decision_by_status(status, code, retryable):
    cls = wire.error_for_status(status, code, "")
    assert is_retryable(cls("x", status=status)) is retryable


def test_transport_errors_are_retryable():
    for cls in (errors.RequestTimeout, errors.ConnectionFailed, errors.MalformedResponse):
        assert is_retryable(cls("x"))
    assert not is_retryable(ValueError("not ours"))


def test_reasons_are_specific():
    assert wire.error_for_status(400, "context_length_exceeded", "").reason == "context_length"
    assert wire.error_for_status(400, "content_filter", "").reason == "content_filter"


def test_redact_removes_keys():
    text = "Incorrect API key provided: sk-abcdef1234567890. Bearer sk-zzzzzzzzzz"
    assert "sk-abc" not in errors.redact(text)
    assert "my-secret-key" not in errors.redact("x my-secret-key y", ["my-secret-key"])


def _run(policy, failures, deadline=None, clock=None):
    """Runs a call failing with the given errors in turn; returns (outcome, attempts, sleeps)."""
    sleeps = []
    clock = clock or (lambda: 0.0)

    async def sleep(secs):
        sleeps.append(secs)

    calls = []

    async def go():
        async for attempt in policy.retrying(deadline=deadline, clock=clock, sleep=sleep,
                                             rng=random.Random(1)):
            with attempt:
                calls.append(1)
                if len(calls) <= len(failures):
                    raise failures[len(calls) - 1]
                return "ok"

    try:
        outcome = asyncio.run(go())
    except errors.ProviderError as exc:
        outcome = exc
    return outcome, len(calls), sleeps


def test_retries_then_succeeds():
    outcome, attempts, sleeps = _run(RetryPolicy(max_retries=3),
                                     [errors.ServerError("a"), errors.RequestTimeout("b")])
    assert outcome == "ok" and attempts == 3 and len(sleeps) == 2


def test_permanent_error_is_not_retried():
    outcome, attempts, sleeps = _run(RetryPolicy(max_retries=5),
                                     [errors.ContextLengthExceeded("too long", status=400)])
    assert isinstance(outcome, errors.ContextLengthExceeded)
    assert attempts == 1 and sleeps == []


def test_gives_up_after_max_retries():
    failures = [errors.ServerError("x", status=503)] * 10
    outcome, attempts, sleeps = _run(RetryPolicy(max_retries=2), failures)
    assert isinstance(outcome, errors.ServerError)
    assert attempts == 3 and len(sleeps) == 2


def test_backoff_is_capped_full_jitter():
    policy = RetryPolicy(initial_backoff_secs=1, max_backoff_secs=4)
    rng = random.Random(3)
    draws = [policy.backoff(attempt, rng) for attempt in range(1, 50)]
    assert all(0 <= d <= 4 for d in draws)
    assert max(draws[5:]) > 2  # later attempts reach towards the cap


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(max_retries=2, initial_backoff_secs=0.01, max_retry_after_secs=10)
    failures = [errors.RateLimited("slow down", status=429, retry_after=7.5),
                errors.RateLimited("slow down", status=429, retry_after=500)]
    outcome, _, sleeps = _run(policy, failures)
    assert outcome == "ok"
    assert sleeps[0] == pytest.approx(7.5, abs=0.01)
    assert sleeps[1] == pytest.approx(10)


def test_deadline_stops_retrying():
    now = [0.0]
    policy = RetryPolicy(max_retries=100, initial_backoff_secs=4, max_backoff_secs=4)

    failures = [errors.ServerError("x", status=500)] * 100
    sleeps = []

    async def sleep(secs):
        sleeps.append(secs)
        now[0] += secs

    calls = []

    async def go():
        async for attempt in policy.retrying(deadline=10.0, clock=lambda: now[0], sleep=sleep,
                                             rng=random.Random(0)):
            with attempt:
                calls.append(1)
                raise failures[0]

    with pytest.raises(errors.ServerError):
        asyncio.run(go())
    assert now[0] < 10.0
    assert len(calls) < 100
