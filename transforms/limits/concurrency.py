"""``--max_concurrency auto``: an adaptive in-flight limit that finds and holds a server's knee.

A self-hosted server (vLLM, TGI, a GPU behind an OpenAI-compatible route) has no RPM to read
from headers: what it has is a knee. Below it, more requests in flight means more throughput at
almost the same latency; past it, throughput stays flat and every extra request only queues,
until the queue is full and the server answers 503. :class:`AdaptiveConcurrency` finds the knee
from what it measures and holds it; :class:`ConcurrencyGate` applies the limit it chooses where
a fixed ``--max_concurrency`` is applied (the flow control's window).

Which algorithm, and why. Three were read:

* TCP Vegas (and Netflix concurrency-limits' ``VegasLimit``): estimates the queue from the
  no-load RTT, ``queue = limit * (1 - rtt_noload / rtt)``, and adds or removes one per RTT
  between two thresholds. Additive steps take hundreds of RTTs to reach a knee of 50 from a
  cold start when an RTT is a second or more, as an LLM request's is.
* Netflix concurrency-limits' ``Gradient2Limit``: ``gradient = tolerance * long_rtt / short_rtt``
  (clamped to [0.5, 1]), ``new = limit * gradient + queue_size``, smoothed. It needs no probe
  because its baseline is a long-term average, but that average drifts up with a queue that
  stays: held long enough over the knee, the baseline forgets what no load looked like.
* Envoy's adaptive concurrency filter (gradient controller): ``gradient = (min_rtt + buffer) /
  sample_rtt`` over a window's percentile, ``new = gradient * limit + sqrt(limit)``, and, now
  and then (with jitter), the limit drops to a small value to measure ``min_rtt`` afresh.

We take Envoy's design: a gradient against a measured no-load baseline, a percentile per
round, square-root headroom and periodic re-probes. It is the one that keeps the baseline
honest (the issue asks for re-probing the no-load latency) and it converges in a few rounds.
Two additions suit LLM calls: a slow start (the limit doubles each round while latency stays
within the tolerance: by Little's law, throughput = in flight / latency, so flat latency means
throughput grows with the limit; Vegas and Envoy grow much more slowly) and the sample is
seconds per completion token (a TPOT-like figure), so that a round of long answers does not look
like a queue. A 503, an overload or a timeout is a drop: at the second drop of a round (a lone
one is a fault, not an overload) the limit is cut by ``backoff`` (once per round, as TCP does
once per window). The limit never goes over ``max_limit``; rate
limits (RPM/TPM) still apply after the gate, so the lower bound wins, and while they hold
requests back the gate is not full and the limit does not grow (Gradient2's "app-limited" rule).

The controller is synchronous and pure (an injected clock, no I/O): the flow control calls
:meth:`AdaptiveConcurrency.on_sent` when a request goes and :meth:`AdaptiveConcurrency.on_done`
when it ends. One endpoint owns one controller; nothing here is process-global.

Example::

    settings = concurrency_setting("auto")[1]        # AdaptiveSettings, or None for a number
    controller = AdaptiveConcurrency(settings, clock=time.monotonic)
    gate = ConcurrencyGate(controller)               # on the loop that runs the requests
    async with gate:
        sent = controller.on_sent()
        ...                                          # the request
        controller.on_done(sent, latency_secs, completion_tokens, outcome=OK)
    controller.figure()   # {"mode": "auto", "final": 52, "min": 4, "max": 64, ...}
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

#: How a request ended, as the controller sees it.
OK = "ok"            # answered: a latency sample
DROP = "drop"        # 503 / overloaded / timeout: the server is past its knee
IGNORE = "ignore"    # anything else (4xx, 429, cancelled): no signal about the knee

STARTUP, PROBE, GROW, HOLD = "startup", "probe", "grow", "hold"

#: The most ``by_time`` points kept in the figure (older ones are thinned, not dropped).
_MAX_POINTS = 240


@dataclasses.dataclass(frozen=True)
class AdaptiveSettings:
    """The controller's knobs (the defaults are what ``--max_concurrency auto`` uses).

    Attributes:
      initial: The limit at a cold start (also the probe's concurrency).
      min_limit: Never below this.
      max_limit: Never above this (``auto:N`` sets it; the worker's connection pool is sized
        for it).
      tolerance: Latency allowed over the no-load baseline before the limit stops growing
        (Envoy's ``buffer``: 1.2 means 20 % over).
      backoff: The limit is multiplied by this on a drop (503, overload, timeout).
      smoothing: Weight of a new gradient estimate against the current limit (Gradient2's 0.2
        is slow for rounds of seconds; 0.5 converges in a few).
      probe_interval_secs: How often the no-load latency is measured again (with jitter).
      probe_samples: Answers at the probe's concurrency that make one baseline.
      round_samples: The fewest answers per round (a round also waits for half the limit).
      drops_to_cut: Drops within one round that make a cut (2: a lone 5xx or timeout, which
        hosted APIs give now and then, is not taken for an overload; a full queue gives many).
    """
    initial: int = 4
    min_limit: int = 2
    max_limit: int = 256
    tolerance: float = 1.15
    backoff: float = 0.75
    smoothing: float = 0.5
    probe_interval_secs: float = 120.0
    probe_samples: int = 4
    round_samples: int = 8
    drops_to_cut: int = 2

    def __post_init__(self):
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError("need 1 <= min_limit <= initial <= max_limit, got "
                             f"{self.min_limit}, {self.initial}, {self.max_limit}")
        if self.tolerance <= 1.0 or not 0 < self.backoff < 1 or not 0 < self.smoothing <= 1:
            raise ValueError("need tolerance > 1, 0 < backoff < 1 and 0 < smoothing <= 1")


def concurrency_setting(value: str) -> Tuple[int, Optional[AdaptiveSettings]]:
    """Reads a ``max_concurrency`` value: a number, ``auto`` or ``auto:MAX``.

    Returns:
      (the ceiling of requests in flight, the adaptive settings or None for a fixed number).

    Raises:
      ValueError: with a message naming the accepted forms.
    """
    text = str(value).strip().lower()
    if text == "auto" or text.startswith("auto:"):
        ceiling = AdaptiveSettings.max_limit
        if text != "auto":
            ceiling = _positive_int(text[5:], value)
        initial = min(AdaptiveSettings.initial, ceiling)
        return ceiling, AdaptiveSettings(max_limit=ceiling, initial=initial,
                                         min_limit=min(AdaptiveSettings.min_limit, initial))
    return _positive_int(text, value), None


def _positive_int(text: str, value) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"max_concurrency must be a positive integer, 'auto' or 'auto:MAX' "
                         f"(e.g. auto:512), got {value!r}")
    return number


class AdaptiveConcurrency:
    """Chooses the in-flight limit of one endpoint from its answers' latency and its drops.

    Rounds: a round gathers the answers to requests sent since the limit last changed; when it
    has ``max(round_samples, limit / 2)`` of them, their median seconds per completion token is
    compared with the baseline and the limit moves. States: ``startup``/``probe`` (the limit is
    ``initial``; the answers make the baseline), ``grow`` (slow start: doubling) and ``hold``
    (Envoy's gradient with square-root headroom).

    Args:
      settings: The knobs.
      clock: Monotonic seconds.
      rng: For the probes' jitter.
    """

    def __init__(self, settings: AdaptiveSettings = AdaptiveSettings(), *,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        self.settings = settings
        self._clock = clock
        self._rng = rng or random.Random(0)
        self.state = STARTUP
        self._limit = float(settings.initial)
        self._held_limit = self._limit  # restored after a probe
        self.baseline: Optional[float] = None  # no-load seconds per token (the last probe's)
        self.in_flight = 0
        self._round_start = clock()
        self._round: List[float] = []
        self._all: List[float] = []
        self._round_drops = 0
        self._round_peak = 0
        self._round_done = 0
        self._next_probe = 0.0
        self.drops = 0
        self.probes = 0
        self._started = clock()
        self._points: List[Dict] = []
        self._window: Deque[float] = collections.deque()  # answer times (throughput)
        self._seen = [settings.initial, settings.initial]
        self._record()

    @property
    def limit(self) -> int:
        """The in-flight limit now."""
        return max(self.settings.min_limit, int(round(self._limit)))

    def on_sent(self) -> Tuple[float, int]:
        """A request goes (after the rate limiter): returns the stamp to give ``on_done``
        (when it went, and how many were in flight with it)."""
        self.in_flight += 1
        self._round_peak = max(self._round_peak, self.in_flight)
        return self._clock(), self.in_flight

    def on_done(self, stamp: Tuple[float, int], latency_secs: float, completion_tokens: int = 0,
                outcome: str = OK) -> None:
        """A request ended.

        Args:
          stamp: What :meth:`on_sent` returned for it.
          latency_secs: How long it took.
          completion_tokens: Its answer's length (0: unknown; the sample is then the latency).
          outcome: ``OK``, ``DROP`` or ``IGNORE``.
        """
        self.in_flight = max(0, self.in_flight - 1)
        now = self._clock()
        sent_at, beside = stamp
        if outcome == DROP:
            self._on_drop(sent_at, now)
            return
        if outcome != OK:
            return
        self._window.append(now)
        if sent_at < self._round_start:
            return  # sent under another limit: says nothing about this one
        sample = latency_secs / max(1, completion_tokens)
        # What the limit costs shows in requests sent with (nearly) that many in flight; the
        # first ones of a round went while it was filling up. A round that never fills (rate
        # limits hold requests back) ends on all its answers instead.
        self._all.append(sample)
        if beside >= 0.75 * self._limit or self.state in (STARTUP, PROBE):
            self._round.append(sample)
        needed = self._needed()
        if len(self._round) >= needed:
            self._end_round(now, self._round)
        elif len(self._all) >= 3 * needed:
            self._end_round(now, self._all)

    def _needed(self) -> int:
        s = self.settings
        if self.state in (STARTUP, PROBE):
            return s.probe_samples
        return max(s.round_samples, self.limit // 2)

    def _on_drop(self, sent_at: float, now: float) -> None:
        self.drops += 1
        if sent_at < self._round_start and self.state not in (STARTUP, PROBE):
            return  # one cut per round: the drops of the same burst count once
        self._round_drops += 1
        if self._round_drops < self.settings.drops_to_cut:
            return  # a lone 5xx or timeout is a fault, not an overload
        s = self.settings
        if self.state == PROBE:
            self._held_limit = max(s.min_limit, self._held_limit * s.backoff)
            return
        self._limit = max(float(s.min_limit), self._limit * s.backoff)
        if self.state == GROW:
            self.state = HOLD
        self._new_round(now)

    def _end_round(self, now: float, samples: List[float]) -> None:
        s = self.settings
        sample = _median(samples)
        if self.state in (STARTUP, PROBE):
            self.baseline = sample
            self.probes += 1
            if self.state == STARTUP:
                self.state = GROW
                self._limit = min(float(s.max_limit), self._limit * 2)
            else:
                self.state = HOLD
                self._limit = self._held_limit
            self._next_probe = now + s.probe_interval_secs * self._rng.uniform(0.85, 1.15)
            self._new_round(now)
            return
        if now >= self._next_probe:
            self._held_limit, self.state = self._limit, PROBE
            self._limit = float(s.initial)
            self._new_round(now)
            return
        # Only a limit actually used says anything (rate limits may be what holds it).
        used = self._round_peak >= self._limit / 2
        gradient = s.tolerance * self.baseline / sample if sample > 0 else 2.0
        if self.state == GROW:
            if gradient >= 1.0:
                if used:
                    self._limit = min(float(s.max_limit), self._limit * 2)
                self._new_round(now)
                return
            self.state = HOLD
        gradient = min(2.0, max(0.5, gradient))
        estimate = self._limit * gradient + self._limit ** 0.5
        if estimate > self._limit and not used:
            estimate = self._limit
        new = (1 - s.smoothing) * self._limit + s.smoothing * estimate
        self._limit = min(float(s.max_limit), max(float(s.min_limit), new))
        self._new_round(now)

    def _new_round(self, now: float) -> None:
        self._round_start = now
        self._round = []
        self._all = []
        self._round_drops = 0
        self._round_peak = self.in_flight
        self._record()

    def _record(self) -> None:
        now = self._clock()
        limit = self.limit
        if self.state != PROBE:
            self._seen = [min(self._seen[0], limit), max(self._seen[1], limit)]
        while self._window and self._window[0] < now - 10.0:
            self._window.popleft()
        point = {"t": round(now - self._started, 3), "limit": limit, "state": self.state,
                 "answers_per_sec": round(len(self._window) / 10.0, 2)}
        if self._points and self._points[-1]["t"] == point["t"]:
            self._points[-1] = point
        else:
            self._points.append(point)
        if len(self._points) > _MAX_POINTS:
            del self._points[1::2]  # thin evenly: the figure keeps its whole span

    def figure(self) -> Dict:
        """The concurrency chosen over time, for the summary and the report.

        Returns:
          ``{"mode": "auto", "final", "min", "max", "p50", "drops", "probes",
          "baseline_ms_per_token", "by_time": [{"t", "limit", "state", "answers_per_sec"}]}``
          (``min``/``max``/``p50`` leave the probes out; ``p50`` is time-weighted).
        """
        self._record()
        points = self._points
        return {"mode": "auto", "final": self.limit, "min": self._seen[0],
                "max": self._seen[1], "p50": _time_weighted_median(points, self._clock()
                                                                   - self._started),
                "drops": self.drops, "probes": self.probes,
                "baseline_ms_per_token": (None if self.baseline is None
                                          else round(self.baseline * 1000, 3)),
                "by_time": list(points)}


class ConcurrencyGate:
    """An asyncio semaphore whose size is the controller's limit (read on every admission).

    Use it where an ``asyncio.Semaphore(max_concurrency)`` would be: ``async with gate:``.
    Loop-bound: make it on the loop that runs the requests.
    """

    def __init__(self, controller: AdaptiveConcurrency):
        self.controller = controller
        self._in_use = 0
        self._waiters: Deque[asyncio.Future] = collections.deque()

    async def __aenter__(self):
        if self._waiters or self._in_use >= self.controller.limit:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._in_use -= 1  # the place it was given goes to the next one
                    self._wake()
                raise
        else:
            self._in_use += 1
        return self

    async def __aexit__(self, *exc) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        """Gives free places to waiters, in order (the limit may have grown meanwhile)."""
        while self._waiters and self._in_use < self.controller.limit:
            future = self._waiters.popleft()
            if not future.done():
                self._in_use += 1
                future.set_result(None)


_LIVE: Dict[str, AdaptiveConcurrency] = {}


def register(endpoint: str, controller: AdaptiveConcurrency) -> None:
    """Lets the driver read an endpoint's figure (:func:`live_figures`) when the workers run in
    its process (the local runners). The endpoint owns the controller; this only points to it.
    """
    _LIVE[endpoint] = controller


def live_figures() -> Dict[str, Dict]:
    """Endpoint → :meth:`AdaptiveConcurrency.figure` of the controllers of this process."""
    return {name: controller.figure() for name, controller in list(_LIVE.items())}


def _median(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _time_weighted_median(points: List[Dict], end: float) -> int:
    """The limit held for half of the time (probes left out)."""
    spans = []
    for point, nxt in zip(points, points[1:] + [{"t": end}]):
        if point["state"] != PROBE:
            spans.append((point["limit"], max(0.0, nxt["t"] - point["t"])))
    if not spans:
        return points[-1]["limit"]
    spans.sort()
    total, seen = sum(s for _, s in spans), 0.0
    for limit, span in spans:
        seen += span
        if seen >= total / 2:
            return limit
    return spans[-1][0]
