"""Counters of what the simulator served, as returned by ``GET /stats``.

Only completion requests are counted: OpenAI's chat completions and Anthropic's messages (not
``/v1/models``, ``/stats`` or token counting); Anthropic's are also counted apart, with the
prompt cache's tokens. A request is recorded once, when its response is sent, in the per-second
bucket of that moment. A connection
reset on purpose has no status code; it is counted under the pseudo-status "0". The Batch API has
its own four counters (files uploaded, batches created and cancelled, lines in created batches);
its lines are not chat-completion requests and are not counted as such. Requests to a path the
simulator does not serve (a wrong base URL) are counted apart, in ``unknown_urls``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

#: Pseudo-status recorded for requests answered by resetting the connection.
STATUS_RESET = 0


class Stats:
    """Mutable counters; used from the server's event loop only (no locking).

    Args:
        clock: Monotonic seconds, for the per-second buckets (injected for tests).
        wall_clock: Epoch seconds, for ``started_at``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self._clock = clock
        self._wall_clock = wall_clock
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Zeroes every counter (requests still in flight stay counted as in flight)."""
        self.requests = 0
        self.successful_completions = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.peak_concurrency = self.in_flight
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self.rate_limited = 0
        self.files_uploaded = 0
        self.batches_created = 0
        self.batches_cancelled = 0
        self.batch_requests = 0
        self.unknown_urls = 0
        self.anthropic_requests = 0
        self.gemini_requests = 0
        self.cache_creation_input_tokens = 0
        self.cache_read_input_tokens = 0
        self.started_at = self._wall_clock()
        self._started_mono = self._clock()
        # second -> [requests, ok, rate_limited]
        self._per_second: dict[int, list[int]] = {}

    def enter(self) -> int:
        """Marks a request as in flight and returns how many are in flight now."""
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        return self.in_flight

    def leave(self) -> None:
        """Marks a request as no longer in flight."""
        self.in_flight -= 1

    def fault(self, kind: str) -> None:
        """Counts one injected fault of ``kind``."""
        self.faults[kind] += 1

    def record(self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0,
               completed: bool = True) -> None:
        """Counts one finished request.

        Args:
            status: The HTTP status sent, or ``STATUS_RESET``.
            prompt_tokens: Counted only for successful completions.
            completion_tokens: Counted only for successful completions.
            completed: False for a 200 that carried no completion (the malformed fault).
        """
        self.requests += 1
        self.by_status[status] += 1
        second = int(self._clock() - self._started_mono)
        bucket = self._per_second.get(second)
        if bucket is None:
            bucket = self._per_second[second] = [0, 0, 0]
        bucket[0] += 1
        if status == 200 and completed:
            self.successful_completions += 1
            bucket[1] += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
        elif status == 429:
            bucket[2] += 1
            self.rate_limited += 1

    def snapshot(self) -> dict[str, Any]:
        """Returns the counters as a JSON-ready dict (the body of ``GET /stats``)."""
        return {
            "requests": self.requests,
            "successful_completions": self.successful_completions,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "faults": dict(sorted(self.faults.items())),
            "rate_limited": self.rate_limited,
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batches_cancelled": self.batches_cancelled,
            "batch_requests": self.batch_requests,
            "unknown_urls": self.unknown_urls,
            "anthropic_requests": self.anthropic_requests,
            "gemini_requests": self.gemini_requests,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "started_at": self.started_at,
            "uptime_s": round(self._clock() - self._started_mono, 3),
            "per_second": [
                {"t": t, "requests": b[0], "ok": b[1], "rate_limited": b[2]}
                for t, b in sorted(self._per_second.items())
            ],
        }
