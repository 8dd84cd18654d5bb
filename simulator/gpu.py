"""A GPU-like inference server (``--server_model gpu``): continuous batching, with a knee.

A hosted API hides its hardware behind rate limits; a self-hosted server (vLLM, TGI, SGLang) has
none, and what limits it is the GPU. Such a server runs an iteration-level scheduler (Orca's
"continuous batching", vLLM's scheduler): every *step* it decodes one token for each sequence in
the running batch, and admits waiting sequences into the batch as others finish. So:

* A step's time barely grows with the batch while decoding is memory-bound (the weights are read
  once per step, whatever the batch): ``step = decode_ms + decode_ms_per_seq * batch``. Below the
  knee, more sequences in flight give proportionally more tokens per second at nearly the same
  latency.
* The batch is capped (``max_batch``: vLLM's ``--max-num-seqs``, or the KV cache running out);
  past it sequences wait in a queue, throughput stays flat and latency grows with the queue.
* Admitting a sequence costs its prefill, in the step that admits it (``prefill_ms_per_token``
  times its prompt tokens), which every running sequence waits for too.
* A bounded queue (``queue``): a request arriving when it is full gets 503 at once (vLLM behind
  a gateway, or TGI's ``--max-concurrent-requests``, answer overloaded the same way).

Throughput against concurrency therefore has a knee at ``max_batch``. The server measures its
own peak throughput and reports it in ``GET /stats`` under ``gpu``: tokens decoded per second
of the steps it ran with a full batch (its capacity, measured, whatever the clients did; the
best 10-second window until a batch was ever full), and that in answers per second at the mean
length of its answers. docs/simulator.md says where the default numbers come from.

Example::

    gpu = GpuModel(GpuSettings(max_batch=48))
    admitted = await gpu.generate(prompt_tokens=180, completion_tokens=120)  # False: 503
    gpu.snapshot()["peak_tokens_per_sec"]
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: The sliding window of the measured throughput, in seconds.
WINDOW_SECS = 10.0


@dataclasses.dataclass(frozen=True)
class GpuSettings:
    """The model's parameters (the simulator's ``--gpu_*`` flags).

    Attributes:
        max_batch: Sequences decoded at once (the knee).
        decode_ms: Time of one decoding step with one sequence.
        decode_ms_per_seq: What each further sequence in the batch adds to a step.
        prefill_ms_per_token: Prefill time per prompt token, paid in the admitting step.
        queue: Sequences that may wait for a place in the batch; beyond, 503.
    """
    max_batch: int = 48
    decode_ms: float = 10.0
    decode_ms_per_seq: float = 0.02
    prefill_ms_per_token: float = 0.01
    queue: int = 64

    def step_secs(self, batch: int, prefill_tokens: int = 0) -> float:
        """One step's time with ``batch`` sequences and that many prompt tokens to prefill."""
        return (self.decode_ms + self.decode_ms_per_seq * batch
                + self.prefill_ms_per_token * prefill_tokens) / 1000.0

    def latency_secs(self, concurrency: int, prompt_tokens: int, completion_tokens: int) -> float:
        """About the latency of a request among ``concurrency`` alike, on paper (the others'
        prefills left out): what the knee looks like, for tests and the benchmark's tables."""
        batch = min(concurrency, self.max_batch)
        own = self.step_secs(batch, prompt_tokens) + (completion_tokens - 1) * self.step_secs(batch)
        return own * max(1.0, concurrency / self.max_batch)


class _Sequence:
    __slots__ = ("prompt", "tokens", "left", "done")

    def __init__(self, prompt: int, tokens: int, done: asyncio.Future):
        self.prompt, self.done = prompt, done
        self.tokens = self.left = max(1, tokens)


class GpuModel:
    """The scheduler: one asyncio task runs steps while any sequence is running or waiting.

    Args:
        settings: The parameters.
        clock: Monotonic seconds (the throughput windows).
        sleep: Awaitable sleep of one step (tests may pass a fake that moves ``clock``).
    """

    def __init__(self, settings: GpuSettings, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._task: asyncio.Task | None = None
        self.reset()

    def reset(self) -> None:
        """Zeroes the counters and the measured peak (sequences in progress carry on)."""
        self.rejected = 0
        self.answered = 0
        self.steps = 0
        self.peak_batch = 0
        self.best_tokens_per_sec = 0.0
        self.best_requests_per_sec = 0.0
        self._full_tokens = 0  # decoded in steps with a full batch
        self._full_secs = 0.0  # how long those steps took
        self._answered_tokens = 0
        self._started = self._clock()
        self._finished: collections.deque[tuple[float, int]] = collections.deque()
        self._window_tokens = 0

    async def generate(self, prompt_tokens: int, completion_tokens: int) -> bool:
        """Runs one request through the batch; returns once its last token is decoded.

        Returns:
            False, at once, when the queue is full (the caller answers 503).
        """
        s = self.settings
        if len(self._running) + len(self._waiting) >= s.max_batch + s.queue:
            self.rejected += 1
            return False
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(_Sequence(prompt_tokens, completion_tokens, done))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            done.cancel()  # the client went away: the scheduler drops it (vLLM aborts it too)
            raise
        return True

    async def _run(self) -> None:
        s = self.settings
        running, waiting = self._running, self._waiting
        while running or waiting:
            prefill = 0
            while waiting and len(running) < s.max_batch:
                seq = waiting.popleft()
                if seq.done.cancelled():
                    continue
                running.append(seq)
                prefill += seq.prompt
            self.peak_batch = max(self.peak_batch, len(running))
            before = self._clock()
            await self._sleep(s.step_secs(len(running), prefill))
            self.steps += 1
            now = self._clock()
            if len(running) >= s.max_batch:
                self._full_tokens += len(running)
                self._full_secs += now - before
            still = []
            for seq in running:
                seq.left -= 1
                if seq.left > 0 and not seq.done.cancelled():
                    still.append(seq)
                elif not seq.done.done():
                    seq.done.set_result(None)
                    self._finish(now, seq)
            running[:] = still

    def _finish(self, now: float, seq: _Sequence) -> None:
        self.answered += 1
        self._answered_tokens += seq.tokens
        self._finished.append((now, seq.tokens))
        self._window_tokens += seq.tokens
        while self._finished and self._finished[0][0] <= now - WINDOW_SECS:
            self._window_tokens -= self._finished.popleft()[1]
        if now - self._started >= WINDOW_SECS:  # a full window: a fair rate
            self.best_requests_per_sec = max(self.best_requests_per_sec,
                                             len(self._finished) / WINDOW_SECS)
            self.best_tokens_per_sec = max(self.best_tokens_per_sec,
                                           self._window_tokens / WINDOW_SECS)

    def peak_tokens_per_sec(self) -> float:
        """The measured capacity: over the full-batch steps (at least one second of them), else
        the best window."""
        if self._full_secs >= 1.0:
            return self._full_tokens / self._full_secs
        return self.best_tokens_per_sec

    def snapshot(self) -> dict[str, Any]:
        """The ``gpu`` block of ``GET /stats``."""
        s = self.settings
        peak = self.peak_tokens_per_sec()
        mean_tokens = self._answered_tokens / self.answered if self.answered else 0
        return {"max_batch": s.max_batch, "queue": s.queue, "running": len(self._running),
                "waiting": len(self._waiting), "peak_batch": self.peak_batch,
                "answered": self.answered, "rejected_queue_full": self.rejected,
                "steps": self.steps,
                "peak_tokens_per_sec": round(peak, 1),
                "peak_requests_per_sec": round(peak / mean_tokens, 3) if mean_tokens else 0.0,
                "full_batch_secs": round(self._full_secs, 3),
                "best_window_tokens_per_sec": round(self.best_tokens_per_sec, 1),
                "best_window_requests_per_sec": round(self.best_requests_per_sec, 3),
                "window_secs": WINDOW_SECS}
