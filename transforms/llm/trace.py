"""What one ticket's attempts took: :class:`CallTrace`, kept while they run and frozen into a
:class:`~transforms.records.CallStats` for the ticket's record (:mod:`transforms.llm.flow`).
"""

from __future__ import annotations

from typing import Optional

from transforms import errors
from transforms.records import CallStats


class CallTrace:
    """Per-ticket bookkeeping while its attempts run (the engine's loop thread only).

    Args:
      deadline: Clock time after which no attempt starts (``--max_ticket_secs``).
      ticket_id: For log lines.
    """
    __slots__ = ("deadline", "ticket_id", "attempts", "call_attempts", "retries", "rate_limited",
                 "server_errors", "timeouts", "throttled", "latency_ms", "prompt_tokens",
                 "completion_tokens", "cost", "first_at", "last_at", "prefetched",
                 "batch_answers", "batch_discount", "cache_read_tokens", "cache_write_tokens",
                 "cache_saved", "endpoint", "model", "by_endpoint")

    def __init__(self, deadline: float, ticket_id: Optional[str] = None):
        self.deadline = deadline
        self.ticket_id = ticket_id
        self.attempts = 0
        self.call_attempts = 0  # attempts of the current logical call (the original or a repair)
        self.retries = 0
        self.rate_limited = 0
        self.server_errors = 0
        self.timeouts = 0
        self.throttled = 0.0
        self.latency_ms = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.first_at: Optional[float] = None
        self.last_at: Optional[float] = None
        # --api batch: the ticket's Batch API outcome line, used once by BatchOutcomeLayer.
        self.prefetched: Optional[str] = None
        self.batch_answers = 0
        self.batch_discount = 0.0
        # The provider's prompt cache: tokens read and written, and what that saved.
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.cache_saved = 0.0
        # --endpoints: who answered, and each endpoint's [requests, rate limited, errors].
        self.endpoint: Optional[str] = None
        self.model: Optional[str] = None
        self.by_endpoint: Optional[dict] = None

    def note_endpoint(self, name: Optional[str], err: Optional[errors.ProviderError] = None
                      ) -> None:
        """Counts a request sent to the endpoint ``name`` (None: the one endpoint), or its error."""
        if name is None:
            return
        counts = (self.by_endpoint if self.by_endpoint is not None
                  else self._new_by_endpoint()).setdefault(name, [0, 0, 0])
        if err is None:
            counts[0] += 1
        else:
            counts[1 if isinstance(err, errors.RateLimited) else 2] += 1

    def _new_by_endpoint(self) -> dict:
        self.by_endpoint = {}
        return self.by_endpoint

    def freeze(self) -> CallStats:
        return CallStats(
            attempts=self.attempts, retries=self.retries, rate_limited=self.rate_limited,
            server_errors=self.server_errors, timeouts=self.timeouts,
            throttled_secs=self.throttled, latency_ms=self.latency_ms,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            cost_usd=self.cost, first_attempt_at=self.first_at, last_attempt_at=self.last_at,
            batch_answers=self.batch_answers, batch_discount_usd=self.batch_discount,
            cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens,
            cache_saved_usd=self.cache_saved,
            endpoints=tuple((name, *counts) for name, counts in (self.by_endpoint or {}).items()))

    def count_error(self, err: errors.ProviderError) -> None:
        if isinstance(err, errors.RateLimited):
            self.rate_limited += 1
        elif isinstance(err, errors.ServerError):
            self.server_errors += 1
        elif isinstance(err, errors.RequestTimeout):
            self.timeouts += 1

    def exhausted_reason(self, max_retries: int) -> str:
        """The dead-letter reason of a retryable error that ended the ticket."""
        return "retries_exhausted" if self.call_attempts > max_retries else "deadline_exceeded"
