"""The retry policy: which errors are retried, how long to wait, when to give up.

The decision is a pure function of the error (:func:`is_retryable`); the waiting is tenacity's,
with exponential backoff and full jitter, raised to what the provider's ``retry-after`` asks for
(capped). Sleep, clock and randomness are injected so tests record the waits instead of sleeping.

Example::

    policy = RetryPolicy(max_retries=5)
    retrying = policy.retrying(deadline=clock() + 300, clock=clock, sleep=asyncio.sleep)
    async for attempt in retrying:
        with attempt:
            await send()
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Awaitable, Callable, Optional

import tenacity

from transforms import errors


def is_retryable(exc: BaseException) -> bool:
    """True when the same request may succeed if sent again.

    Retried: 408, 409, 429, 5xx, timeouts, connection errors, malformed response bodies.
    Never: 400 (including context length and content filter), 401, 403, 404, 422.
    """
    return isinstance(exc, errors.RetryableError)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a failing request is retried.

    Attributes:
      max_retries: Retries after the first attempt (so at most max_retries + 1 requests).
      initial_backoff_secs: The first backoff's upper bound.
      max_backoff_secs: Upper bound of any backoff.
      max_retry_after_secs: Cap on a provider's ``retry-after``; a larger ask is cut to this.
    """
    max_retries: int = 6
    initial_backoff_secs: float = 0.5
    max_backoff_secs: float = 30.0
    max_retry_after_secs: float = 60.0

    def backoff(self, attempt: int, rng: random.Random, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter: uniform in [0, min(max, initial * 2**(attempt-1))]; never less than the
        provider's ``retry-after`` (capped at ``max_retry_after_secs``).
        """
        ceiling = min(self.max_backoff_secs, self.initial_backoff_secs * (2 ** (attempt - 1)))
        wait = rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after_secs))
        return wait

    def retrying(self, *, deadline: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Optional[random.Random] = None,
                 before_sleep: Optional[Callable[[tenacity.RetryCallState], None]] = None,
                 ) -> tenacity.AsyncRetrying:
        """Builds a tenacity controller for one ticket.

        Args:
          deadline: Clock time after which no further attempt starts (the per-ticket deadline);
            a retry whose wait would end past it is not made.
          clock: The clock the deadline is measured on.
          sleep: Awaitable sleep; tests pass a recorder.
          rng: Source of jitter.
          before_sleep: Called before each wait (metrics, logging).

        Returns:
          An ``AsyncRetrying`` that re-raises the last error when it gives up.
        """
        rng = rng or random.Random()

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return self.backoff(state.attempt_number, rng, retry_after)

        stop = tenacity.stop_after_attempt(self.max_retries + 1)
        if deadline is not None:
            stop = stop | _StopAtDeadline(deadline, clock)
        return tenacity.AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(is_retryable),
            sleep=sleep,
            reraise=True,
            before_sleep=before_sleep,
        )


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stops when the next attempt would start after the deadline."""

    def __init__(self, deadline: float, clock: Callable[[], float]):
        self._deadline = deadline
        self._clock = clock

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        return self._clock() + (state.upcoming_sleep or 0.0) >= self._deadline
