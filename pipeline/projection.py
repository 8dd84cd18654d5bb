"""What a ``--sample`` run says about the full job: cost, duration, bound and failures.

The sample is N valid tickets drawn by a stable hash of the id (:mod:`transforms.sample`), so
it is a simple random sample of the input's valid tickets. From its real answers:

* ``cost_usd`` — the sample's mean cost per ticket × the full input's valid tickets, with a 95 %
  confidence interval (normal approximation, finite-population correction);
  ``batch_cost_usd`` — the same tokens at the model's Batch API prices.
* ``wall_secs`` — start-up (the sample's wall time minus its own bound) + the full job's bound:
  the largest of the times the request limit, the token limit, concurrency × latency and this
  machine's CPU allow for the full job (``bound`` names it; ``bounds_secs`` has them all).
  Requests per ticket (retries and repairs included), prompt tokens per request and the mean
  latency come from the sample; the limits and concurrency are the run's flags.
* ``cache_read_tokens``, ``cache_write_tokens``, ``cache_saved_usd`` — the provider's prompt
  cache over the full job: the sample's writes (the static prefix written once, as when the
  sample started) and its cached tokens per ticket for every other ticket, read within the TTL
  (:mod:`pipeline.caching`), and what that saves against plain input.
* ``dead_letter_rate`` — reason → the share of tickets it will hit: LLM-stage reasons as measured
  on the sample, parse-stage reasons as counted on the whole input (it was all read).

Example::

    projection = project(summary, ticket_costs, settings)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline.caching import ASSUMPTION
from transforms.pricing import Price
from transforms.validate import PARSE_REASONS

Z95 = 1.959963984540054

BOUND_RPM = "requests_per_minute"
BOUND_TPM = "tokens_per_minute"
BOUND_CONCURRENCY = "concurrency_x_latency"
BOUND_CPU = "cpu"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's flags and prices that the projection needs."""
    requests_per_minute: float
    tokens_per_minute: float
    max_tokens: int
    max_concurrency: int
    worker_processes: int
    price: Price
    batch_price: Price
    cpu_secs_per_ticket: Optional[float] = None
    cache_ttl: str = "5m"


def _bounds(tickets: float, per_ticket: Dict[str, float], s: Settings) -> Dict[str, float]:
    """Seconds each limit needs for ``tickets`` tickets."""
    requests = tickets * per_ticket["requests"]
    out = {BOUND_CONCURRENCY: requests * per_ticket["latency_secs"]
           / max(1, s.max_concurrency * s.worker_processes)}
    if s.requests_per_minute:
        out[BOUND_RPM] = requests * 60.0 / s.requests_per_minute
    if s.tokens_per_minute:
        # Providers charge prompt + max_tokens per request at admission.
        charged = requests * (per_ticket["prompt_per_request"] + s.max_tokens)
        out[BOUND_TPM] = charged * 60.0 / s.tokens_per_minute
    if s.cpu_secs_per_ticket:
        out[BOUND_CPU] = tickets * s.cpu_secs_per_ticket / max(1, s.worker_processes)
    return out


def _ci(costs: Sequence[float], population: int) -> Tuple[float, float, float]:
    """Total, and its 95 % interval, of a population from a simple random sample of it."""
    n = len(costs)
    mean = statistics.fmean(costs)
    total = mean * population
    if n < 2 or population <= n:
        return total, total, total
    correction = math.sqrt((population - n) / (population - 1))
    half = Z95 * statistics.stdev(costs) / math.sqrt(n) * correction * population
    return total, max(0.0, total - half), total + half


def project(summary: dict, ticket_costs: List[float], settings: Settings) -> Optional[dict]:
    """The projection of a sample run (None when no sampled ticket reached the model)."""
    parse_dead = summary["parse_errors"] + summary["duplicates"]
    sampled = summary["succeeded"] + summary["dead_lettered"] - parse_dead
    if sampled <= 0:
        return None
    tickets = sampled + summary["not_sampled"]
    requests = max(summary["requests"], 1)
    per_ticket = {
        "requests": summary["requests"] / sampled,
        "prompt_per_request": summary["prompt_tokens"] / requests,
        "latency_secs": (summary.get("latency_ms_mean") or 0.0) / 1000.0,
    }
    full = _bounds(tickets, per_ticket, settings)
    own = _bounds(sampled, per_ticket, settings)
    bound = max(full, key=full.get)
    startup = max(0.0, summary["wall_secs"] - max(own.values()))
    costs = list(ticket_costs) or [0.0]
    total, low, high = _ci(costs, tickets)
    online = settings.price.cost(summary["prompt_tokens"], summary["completion_tokens"])
    batch = settings.batch_price.cost(summary["prompt_tokens"], summary["completion_tokens"])
    writes = int(summary.get("cache_write_tokens") or 0)
    cached_per_ticket = (int(summary.get("cache_read_tokens") or 0) + writes) / sampled
    reads = max(0, int(round(cached_per_ticket * tickets)) - writes)
    reasons = summary.get("dead_letter_reasons") or {}
    rates = {reason: round(count / (summary["read"] if reason in PARSE_REASONS else sampled), 4)
             for reason, count in reasons.items()}
    return {
        "sample_size": sampled,
        "tickets": tickets,
        "cost_usd": round(total, 6),
        "cost_usd_ci95": [round(low, 6), round(high, 6)],
        "batch_cost_usd": round(total * batch / online, 6) if online else 0.0,
        "wall_secs": round(startup + full[bound], 1),
        "bound": bound,
        "bounds_secs": {k: round(v, 1) for k, v in full.items()},
        "startup_secs": round(startup, 1),
        "requests_per_ticket": round(per_ticket["requests"], 3),
        "cache_read_tokens": reads,
        "cache_write_tokens": writes,
        "cache_saved_usd": round(settings.price.cache_saving(reads, writes, settings.cache_ttl),
                                 6),
        "dead_letter_rate": rates,
    }


def _words(name: str) -> str:
    return name.replace("_", " ")


def projection_rows(p: dict) -> List[Tuple[str, str]]:
    """The projection as summary rows."""
    low, high = p["cost_usd_ci95"]
    bounds = ", ".join(f"{_words(k)} {v} s" for k, v in p["bounds_secs"].items())
    rows = [
        ("projection", f"the full input: {p['tickets']} tickets (from a sample of "
                       f"{p['sample_size']}); finish it with --resume and without --sample"),
        ("  cost", f"${p['cost_usd']:.4f} (95% interval ${low:.4f} to ${high:.4f}); "
                   f"${p['batch_cost_usd']:.4f} through the Batch API"),
        ("  wall time", f"{p['wall_secs']} s, bound by {_words(p['bound'])} ({bounds})"),
    ]
    if p.get("cache_read_tokens") or p.get("cache_write_tokens"):
        rows.append(("  prompt cache", f"{p['cache_read_tokens']} tokens read, "
                                       f"{p['cache_write_tokens']} written, saving "
                                       f"${p['cache_saved_usd']:.4f} (assumes {ASSUMPTION})"))
    if p["dead_letter_rate"]:
        rows.append(("  dead letters", ", ".join(f"{k} {100 * v:.1f}%"
                                                 for k, v in p["dead_letter_rate"].items())))
    return rows


class CpuMeter:
    """This process's CPU seconds per finished ticket, start-up excluded.

    A metrics listener (:func:`transforms.metrics.listen`): it notes the process's CPU time when
    the first ticket finishes and when the last one does. Only meaningful when the workers run
    in this process (the default local runner).
    """

    def __init__(self, cpu=time.process_time):
        self._cpu = cpu
        self._first: Optional[float] = None
        self._last: Optional[float] = None
        self._finished = 0

    def add(self, name: str, n: int) -> None:
        pass

    def in_flight(self, delta: int) -> None:
        pass

    def finished(self, record) -> None:
        now = self._cpu()
        if self._first is None:
            self._first = now
        self._last = now
        self._finished += 1

    def per_ticket(self) -> Optional[float]:
        if self._finished < 2:
            return None
        return (self._last - self._first) / (self._finished - 1)
