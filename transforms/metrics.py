"""Every Beam metric of the ``ticketflow`` namespace, in one collector.

Counters and distributions are declared here once, with stable snake_case names (README, "Metrics").
DoFns record through :class:`TicketflowMetrics`; the driver turns a finished run's metrics into a
summary with :func:`summarize`.

Counters: ``tickets_read``, ``parse_errors``, ``duplicates``, ``requests``, ``succeeded``,
``dead_lettered``, ``retries``, ``rate_limited``, ``server_errors``, ``timeouts``, ``prompt_tokens``,
``completion_tokens``, ``throttled_ms``, ``cache_hits``, ``cost_nano_usd``, ``already_done``,
``replay_skipped``, ``not_sampled``, the provider's prompt cache (``cache_read_tokens``,
``cache_write_tokens``, ``cache_saved_nano_usd``: what it saved against plain input, may be
negative) and Dataflow's ``cumulativeThrottlingSeconds``.
Distributions: ``latency_ms``, ``attempts`` and, in streaming jobs, ``first_response_ms`` (from
a ticket's arrival — its message's publish time or its file's modification time — to its result,
counted in ``first_response_bucket_le_<N>ms`` buckets too).

Because a distribution only keeps count, sum, min and max, latency is also counted in log-spaced
buckets, one counter each: ``latency_bucket_le_<N>ms`` (and ``latency_bucket_le_infms``), from
which :func:`latency_percentiles` estimates p50/p90/p99 on every runner. Dead letters are also
counted per reason code: ``dead_letter_<reason>``.

Beam metrics of the local runners can only be read once the pipeline is done, so every increment
is also passed to the listeners registered in this process with :func:`listen` (the driver's live
progress registers one; on workers in other processes nobody listens).
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence

from apache_beam.io.components.adaptive_throttler import ThrottlingSignaler
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from transforms.records import CallStats, DeadLetter, Result

NAMESPACE = "ticketflow"

COUNTERS = (
    "tickets_read", "parse_errors", "duplicates", "requests", "succeeded", "dead_lettered",
    "retries", "rate_limited", "server_errors", "timeouts", "prompt_tokens", "completion_tokens",
    "throttled_ms", "cache_hits", "cost_nano_usd", "already_done", "replay_skipped",
    "not_sampled", "quota_fallbacks", "cache_read_tokens", "cache_write_tokens",
    "cache_saved_nano_usd",
)
# Per worker process, cumulative (their max is the job's): wall-clock time its requests were
# held back by the limiter, its provider was down (circuit breaker open), its shared quota was
# replaced by the static share (Redis unreachable).
PROCESS_DISTRIBUTIONS = ("limiter_held_ms", "outage_ms", "quota_fallback_ms")
DISTRIBUTIONS = ("latency_ms", "attempts", "first_response_ms") + PROCESS_DISTRIBUTIONS
THROTTLING_COUNTER = "cumulativeThrottlingSeconds"

# Upper bounds (ms) of the latency buckets: 1..8 ms, then the R10 series (x1.26) up to 10 min,
# so a percentile read from them is within about 13% of the true value.
_R10 = (10, 12, 16, 20, 25, 32, 40, 50, 63, 80)
LATENCY_BUCKETS_MS: Sequence[int] = tuple(
    [1, 2, 3, 4, 5, 6, 8]
    + [m * 10 ** e for e in range(0, 5) for m in _R10]
    + [1_000_000])
LATENCY_BUCKET_PREFIX = "latency_bucket_le_"
#: Streaming jobs: the first response time (arrival to emitted result) in the same buckets.
FIRST_RESPONSE_BUCKET_PREFIX = "first_response_bucket_le_"
DEAD_LETTER_PREFIX = "dead_letter_"
# --endpoints: endpoint_{requests,rate_limited,errors,succeeded}__<name>, made on first use.
ENDPOINT_PREFIX = "endpoint_"
ENDPOINT_FIGURES = ("requests", "succeeded", "rate_limited", "errors")


def latency_bucket(ms: float, prefix: str = LATENCY_BUCKET_PREFIX) -> str:
    """The counter name of the bucket holding a latency of ``ms`` milliseconds."""
    i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
    bound = "inf" if i >= len(LATENCY_BUCKETS_MS) else str(LATENCY_BUCKETS_MS[i])
    return f"{prefix}{bound}ms"


def bucket_bound(name: str, prefix: str = LATENCY_BUCKET_PREFIX) -> float:
    """The upper bound (ms) of a bucket counter's name (``inf`` for the last)."""
    return float(name[len(prefix):-2])


def latency_histogram(counts: Mapping[str, float],
                      prefix: str = LATENCY_BUCKET_PREFIX) -> List[tuple]:
    """``[(lower_ms, upper_ms, count), ...]`` of the non-empty buckets, in order."""
    buckets = sorted((bucket_bound(k, prefix), int(v)) for k, v in counts.items()
                     if k.startswith(prefix) and v)
    out = []
    for upper, count in buckets:
        i = bisect.bisect_left(LATENCY_BUCKETS_MS, upper)
        lower = float(LATENCY_BUCKETS_MS[i - 1]) if i > 0 else 0.0
        out.append((lower, upper, count))
    return out


def latency_percentiles(counts: Mapping[str, float], quantiles: Iterable[float] = (0.5, 0.9, 0.99),
                        max_ms: Optional[float] = None,
                        prefix: str = LATENCY_BUCKET_PREFIX) -> Dict[float, Optional[float]]:
    """Estimates latency percentiles from the bucket counters (linear within a bucket).

    Args:
      counts: Counter name → value; the ``latency_bucket_le_*`` ones are used (or those of
        ``prefix``: ``first_response_bucket_le_*``).
      quantiles: In (0, 1].
      max_ms: The largest latency seen (from the distribution), to bound the last bucket.

    Returns:
      Quantile → milliseconds (None when no latency was recorded).
    """
    histogram = latency_histogram(counts, prefix)
    total = sum(c for _, _, c in histogram)
    out: Dict[float, Optional[float]] = {}
    for q in quantiles:
        if not total:
            out[q] = None
            continue
        rank = q * total
        seen = 0
        value = None
        for lower, upper, count in histogram:
            if seen + count >= rank:
                if upper == float("inf") or (max_ms is not None and upper > max_ms):
                    upper = max(lower, max_ms) if max_ms is not None else lower
                value = lower + (upper - lower) * (rank - seen) / count
                break
            seen += count
        out[q] = round(value, 1) if value is not None else None
    return out


class Listener(Protocol):
    """Receives every increment made in this process, as it happens (any thread)."""

    def add(self, name: str, n: int) -> None:
        """A counter of the namespace moved by ``n``."""

    def finished(self, record) -> None:
        """A ticket left the pipeline as a Result or a DeadLetter."""

    def in_flight(self, delta: int) -> None:
        """A request was sent (+1) or answered (-1)."""


_listeners: List[Listener] = []
_listeners_lock = threading.Lock()


def listen(listener: Listener) -> Callable[[], None]:
    """Registers ``listener`` for this process's increments; returns the function removing it."""
    with _listeners_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)
    return remove


def live_in_flight(delta: int) -> None:
    """Tells the listeners that a request was sent (+1) or answered (-1); not a Beam metric."""
    for listener in list(_listeners):
        listener.in_flight(delta)


class TicketflowMetrics:
    """The namespace's counters; create one per DoFn instance (in ``setup`` or ``__init__``).

    Beam metrics are bound to the bundle's thread, so record only from ``process`` or
    ``finish_bundle``, never from a background thread.
    """

    def __init__(self):
        self.counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}
        self.distributions = {name: Metrics.distribution(NAMESPACE, name) for name in DISTRIBUTIONS}
        self._throttling = ThrottlingSignaler(NAMESPACE)
        self._throttled_carry = 0.0

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            counter = self.counters.get(name)
            if counter is None:
                # Bucket and per-reason counters are made on first use.
                counter = self.counters[name] = Metrics.counter(NAMESPACE, name)
            counter.inc(n)
            for listener in _listeners:
                listener.add(name, n)

    def _calls(self, stats: CallStats) -> None:
        """Requests, waits, tokens and cost of one ticket (answered or not: all of it is spent)."""
        self.inc("requests", stats.attempts)
        self.inc("retries", stats.retries)
        self.inc("rate_limited", stats.rate_limited)
        self.inc("server_errors", stats.server_errors)
        self.inc("timeouts", stats.timeouts)
        self.inc("prompt_tokens", stats.prompt_tokens)
        self.inc("completion_tokens", stats.completion_tokens)
        self.inc("cost_nano_usd", int(round(stats.cost_usd * 1e9)))
        self.inc("cache_read_tokens", stats.cache_read_tokens)
        self.inc("cache_write_tokens", stats.cache_write_tokens)
        self.inc("cache_saved_nano_usd", int(round(stats.cache_saved_usd * 1e9)))
        for name, requests, rate_limited, errors in stats.endpoints:
            self.inc(ENDPOINT_PREFIX + "requests__" + name, requests)
            self.inc(ENDPOINT_PREFIX + "rate_limited__" + name, rate_limited)
            self.inc(ENDPOINT_PREFIX + "errors__" + name, errors)
        if stats.attempts:
            self.distributions["attempts"].update(stats.attempts)
        if stats.throttled_secs:
            self.inc("throttled_ms", int(stats.throttled_secs * 1000))
            # Dataflow's counter is whole seconds; carry the fraction so none is lost.
            self._throttled_carry += stats.throttled_secs
            whole = int(self._throttled_carry)
            if whole:
                self._throttling.signal_throttled(whole)
                self._throttled_carry -= whole

    def record_process(self, held_ms: int, outage_ms: int, fallback_ms: int,
                       new_fallbacks: int) -> None:
        """This worker process's cumulative waits (their max over processes is the job's)."""
        for name, value in zip(PROCESS_DISTRIBUTIONS, (held_ms, outage_ms, fallback_ms)):
            self.distributions[name].update(int(value))
        self.inc("quota_fallbacks", new_fallbacks)

    def _finished(self, record) -> None:
        for listener in _listeners:
            listener.finished(record)

    def record_result(self, result: Result) -> None:
        self._calls(result.stats)
        self.inc("succeeded")
        if result.endpoint is not None:
            self.inc(ENDPOINT_PREFIX + "succeeded__" + result.endpoint)
        if result.cached:
            self.inc("cache_hits")
        self.distributions["latency_ms"].update(int(result.stats.latency_ms))
        self.inc(latency_bucket(result.stats.latency_ms))
        self._finished(result)

    def record_first_response(self, ms: float) -> None:
        """A streaming job emitted a result ``ms`` after its ticket arrived."""
        self.distributions["first_response_ms"].update(int(ms))
        self.inc(latency_bucket(ms, FIRST_RESPONSE_BUCKET_PREFIX))

    def record_dead_letter(self, dead: DeadLetter) -> None:
        self._calls(dead.stats)
        self.inc("dead_lettered")
        self.inc(DEAD_LETTER_PREFIX + dead.reason)
        self._finished(dead)


def summarize(metric_results) -> Dict[str, float]:
    """Reads the namespace's committed metrics from a finished ``PipelineResult.metrics()``.

    Returns:
      Counter name → value (0 when never incremented; bucket and per-reason counters only when
      incremented), plus ``latency_ms_mean``/``max`` and ``attempts_mean``/``max`` from the
      distributions.
    """
    query = metric_results.query(MetricsFilter().with_namespace(NAMESPACE))
    out: Dict[str, float] = {name: 0 for name in COUNTERS}
    out[THROTTLING_COUNTER] = 0
    for counter in query.get("counters", []):
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + (counter.committed or 0)
    for dist in query.get("distributions", []):
        name = dist.key.metric.name
        value = dist.committed
        if value is None or not value.count:
            continue
        out[f"{name}_mean"] = round(value.sum / value.count, 3)
        out[f"{name}_max"] = value.max
        out[f"{name}_count"] = value.count
    return out


def endpoint_figures(counts: Mapping[str, float], names) -> Dict[str, Dict[str, float]]:
    """Per endpoint: requests, succeeded, rate_limited, errors and its share of the answers
    (from the ``endpoint_<figure>__<name>`` counters of :func:`summarize`)."""
    out = {name: {f: int(counts.get(f"{ENDPOINT_PREFIX}{f}__{name}", 0))
                  for f in ENDPOINT_FIGURES} for name in names}
    answered = sum(e["succeeded"] for e in out.values())
    for figures in out.values():
        figures["share"] = round(figures["succeeded"] / answered, 4) if answered else 0.0
    return out


def dead_letter_reasons(counts: Mapping[str, float]) -> Dict[str, int]:
    """Reason code → count, from the ``dead_letter_<reason>`` counters of :func:`summarize`."""
    return {k[len(DEAD_LETTER_PREFIX):]: int(v) for k, v in sorted(counts.items())
            if k.startswith(DEAD_LETTER_PREFIX) and v}
