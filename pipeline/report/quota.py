"""The run report's quota section: did the job run at the provider's limit?

Four plots over the run, second by second: requests/s and tokens/s with the configured limits
(``--requests_per_minute``/60, ``--tokens_per_minute``/60) drawn as lines, 429 answers/s, and
the time held back by the rate limiter per second. :func:`quota_data` gathers them after a run:
from this process's live counters (:class:`pipeline.progress.QuotaSeconds`, placed at each
ticket's attempt times) when the workers ran here, else from the written results and dead
letters (:func:`pipeline.outputs.request_timings`, which know no 429s and no waits).

Example::

    quota = quota_data(config, live=True, start_wall=started)
    html_parts = quota_section(quota, summary)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from pipeline import progress
from pipeline.outputs import TicketTiming, request_timings
from pipeline.report.svg import (BAD, OK, WARN, Line, downsample, figure, fmt, rate_svg,
                                 text_html)

_LOG = logging.getLogger("ticketflow")

SOURCE_LIVE = "live"
SOURCE_FILES = "files"
_PURPLE = "#6f42c1"


class QuotaRow(NamedTuple):
    """One second of the run; ``rate_limited`` and ``throttled_secs`` are None when unknown."""
    t: float
    requests: float
    prompt_tokens: float
    completion_tokens: float
    rate_limited: Optional[float]
    throttled_secs: Optional[float]


@dataclasses.dataclass(frozen=True)
class Quota:
    """The quota plots' data: what the run asked of the provider, second by second.

    Attributes:
      rows: One :class:`QuotaRow` per second from the run's start, gap-free.
      source: :data:`SOURCE_LIVE` (this process's live counters) or :data:`SOURCE_FILES`
        (the written results and dead letters).
      requests_per_minute: ``--requests_per_minute`` (0: no limit).
      tokens_per_minute: ``--tokens_per_minute`` (0: no limit).
      max_tokens: ``--max_tokens`` (what a request reserves for its answer; 0: unknown).
      job_share: The part of those limits this job's workers may use together
        (``--worker_share`` times the worker processes; 1 by default).
      concurrency: ``--max_concurrency`` times the worker processes: at most this many
        tickets wait for the limiter at once (0: unknown).
    """
    rows: Sequence[QuotaRow]
    source: str
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    max_tokens: int = 0
    job_share: float = 1.0
    concurrency: int = 0


def origin(first: int, start_wall: float) -> int:
    """The epoch second a plot starts at: the run's start, unless data came before it."""
    return int(start_wall) if start_wall and start_wall <= first else first


def quota_rows(seconds: Dict[int, Sequence[float]], start_wall: float,
               known: bool = True) -> List[QuotaRow]:
    """Per-second ``{epoch second: values of progress.QUOTA_SERIES}`` → gap-free rows from the
    run's start (the same origin as the throughput timeline).

    Args:
      seconds: :attr:`pipeline.progress.QuotaSeconds.seconds`.
      start_wall: POSIX time the run started.
      known: False when 429s and waits are unknown (the file source): they become None.
    """
    if not seconds:
        return []
    start = origin(min(seconds), start_wall)
    zero = (0.0,) * len(progress.QUOTA_SERIES)
    rows = []
    for second in range(start, max(seconds) + 1):
        requests, prompt, completion, limited, throttled = seconds.get(second, zero)
        rows.append(QuotaRow(float(second - start), requests, prompt, completion,
                             limited if known else None, throttled if known else None))
    return rows


def quota_from_timings(timings: Iterable[TicketTiming], start_wall: float) -> List[QuotaRow]:
    """The written files' request times (:func:`pipeline.outputs.request_timings`) → rows."""
    buckets = progress.QuotaSeconds()
    for t in timings:
        buckets.ticket(t.attempts, 0, t.prompt_tokens, t.completion_tokens, 0.0, t.first_at,
                       t.last_at)
    return quota_rows(buckets.seconds, start_wall, known=False)


def quota_data(config, live: bool, start_wall: float) -> Quota:
    """The quota plots' data for a finished run: the live counters when this process saw the
    work (``live`` and any request counted), else the written files.

    Args:
      config: The run's ``JobConfig`` (limits, output prefix, worker share).
      live: Whether the workers ran in this process.
      start_wall: POSIX time the run started (the plots' origin).
    """
    settings = {"requests_per_minute": config.requests_per_minute,
                "tokens_per_minute": config.tokens_per_minute,
                "max_tokens": config.llm.max_tokens,
                "job_share": config.worker_share * config.worker_processes,
                "concurrency": config.llm.max_concurrency * config.worker_processes}
    seconds = progress.STATS.quota_seconds() if live else {}
    if seconds:
        return Quota(quota_rows(seconds, start_wall), SOURCE_LIVE, **settings)
    try:
        rows = quota_from_timings(request_timings(config.output), start_wall)
    except Exception:  # noqa: BLE001 - the plots are a nicety; the summary is what matters
        _LOG.debug("cannot read request times", exc_info=True)
        rows = []
    return Quota(rows, SOURCE_FILES, **settings)


_SOURCE_NOTES = {
    SOURCE_LIVE: (
        "Source: this process's live counters. Counters move when a ticket finishes, so each "
        "finished ticket is placed at its own attempt times instead: its requests at its "
        "attempts (a record keeps the first and the last; attempts between are spread evenly), "
        "its 429s at its earliest attempts, its tokens at its last attempt, its waits over "
        "the time before and between its attempts."),
    SOURCE_FILES: (
        "Source: the written results and dead letters (this runner's workers are not in this "
        "process, so there are no live counters): a result's last request at finished_at "
        "minus its latency, earlier attempts spread back to started_at; a dead letter's at "
        "its first and last attempt times. The files record neither 429s nor waits: see "
        "rate_limited and throttled_secs in the summary."),
}
_HOW_TO_READ = (
    "How to read: a job held at its limit runs along the dashed red line while tickets wait "
    "for the limiter; 429s mean the provider's own limit is lower than the configured one (or "
    "is shared with other clients); well below the line with nothing waiting, the limit did "
    "not bound the run (concurrency, latency or the input did). Answers from the response "
    "store and the Batch API are left out: they do not count against the online limits.")


def _busy(points: Sequence[Tuple[float, float]]) -> List[float]:
    """The values from the first non-zero second to the last."""
    busy = [i for i, (_, v) in enumerate(points) if v]
    return [v for _, v in points[busy[0]:busy[-1] + 1]] if busy else []


def _limit_text(unit: str, limit: Optional[float], flag: str, per_minute: float,
                job_share: float) -> str:
    if not limit:
        return f"No limit configured ({flag} 0): no limit line."
    text = f"Configured limit {fmt(round(limit, 3))} {unit}/s (dashed red; {flag} {per_minute:g})."
    if abs(job_share - 1.0) > 0.01:
        text += (f" This job's workers may use {fmt(round(job_share * 100, 1))}% of it "
                 f"(--worker_share): {fmt(round(limit * job_share, 3))} {unit}/s.")
    return text


def _stats_text(label: str, unit: str, points, limit: Optional[float]) -> str:
    values = _busy(points)
    if not values:
        return f"{label}: none."
    mean = sum(values) / len(values)
    text = (f"{label}: mean {fmt(round(mean, 2))} {unit}/s over the {len(values)} s from the "
            "first to the last")
    if limit:
        near = sum(1 for v in values if v >= 0.9 * limit)
        text += (f" ({fmt(round(100 * mean / limit, 1))}% of the limit; at 90% of it or more "
                 f"in {near} of those seconds)")
    return f"{text}; peak {fmt(round(max(values), 2))} {unit}/s."


def _limit_label(unit: str, limit: Optional[float], flag: str, per_minute: float) -> str:
    return f"limit {fmt(round(limit, 3))} {unit}/s ({flag} {per_minute:g})" if limit else ""


def _requests_plot(quota: Quota, rows, per: str) -> List[str]:
    rpm = quota.requests_per_minute or 0.0
    limit = rpm / 60 or None
    points = [(r[0], r[1]) for r in rows]
    caption = " ".join([f"Requests sent per second{per}.",
                        _limit_text("requests", limit, "--requests_per_minute", rpm,
                                    quota.job_share),
                        _stats_text("Sent", "requests", points, limit)])
    return ["<h3>Requests / s</h3>", figure("requests_rate", caption, rate_svg(
        "requests_rate", [Line("requests", "requests sent / s", OK, points)],
        y_label="requests / s", limit=limit,
        limit_label=_limit_label("requests", limit, "--requests_per_minute", rpm),
        no_limit_note="no limit configured"))]


def _tokens_plot(quota: Quota, rows, per: str) -> List[str]:
    tpm = quota.tokens_per_minute or 0.0
    limit = tpm / 60 or None
    used = [(r[0], r[2] + r[3]) for r in rows]
    lines = [Line("tokens", "used (prompt + completion) / s", _PURPLE, used)]
    parts = [f"Tokens per second{per}, at the time the request was sent.",
             _limit_text("tokens", limit, "--tokens_per_minute", tpm, quota.job_share),
             _stats_text("Used (prompt + completion, as the answers reported them)", "tokens",
                         used, limit)]
    if quota.max_tokens:
        # What the limiter reserves and a provider counting at admission charges: the prompt
        # plus --max_tokens for every request it accepted (a 429 was not accepted).
        admitted = [(r[0], r[2] + (r[1] - (r[4] or 0.0)) * quota.max_tokens) for r in rows]
        lines.append(Line("tokens_admitted", f"admitted (prompt + --max_tokens {quota.max_tokens}"
                          ") / s", _PURPLE, admitted, dotted=True))
        parts.append(_stats_text(
            f"Admitted (dotted: prompt + --max_tokens {quota.max_tokens} per request, as our "
            "limiter and providers that count tokens when they admit a request see them)",
            "tokens", admitted, limit))
    return ["<h3>Tokens / s</h3>", figure("tokens_rate", " ".join(parts), rate_svg(
        "tokens_rate", lines, y_label="tokens / s", limit=limit,
        limit_label=_limit_label("tokens", limit, "--tokens_per_minute", tpm),
        no_limit_note="no limit configured"))]


def quota_section(quota: Optional[Quota], summary: dict) -> List[str]:
    """The report's quota section (HTML fragments); nothing without ``quota``."""
    if quota is None:
        return []
    out = ["<h2>Provider quota: did the job run at the limit?</h2>",
           f'<p class="note">{text_html(_HOW_TO_READ)}</p>',
           f'<p class="note">{text_html(_SOURCE_NOTES.get(quota.source, ""))}</p>']
    rows, bin_secs = downsample(quota.rows)
    per = "" if bin_secs == 1 else f" (averaged over {bin_secs}-second bins)"
    out += _requests_plot(quota, rows, per) + _tokens_plot(quota, rows, per)
    known = [r for r in rows if r[4] is not None]
    limited_caption = (f"Answers 429 (rate limited) per second{per}, at the attempt times; "
                       f"{fmt(summary.get('rate_limited', 0))} in all.")
    held_caption = (f"Time held back per second{per}: the seconds tickets spent waiting for the "
                    "rate limiter or a 429's retry-after, per second of the run, which is how "
                    "many tickets were waiting at once on average; "
                    f"{fmt(summary.get('throttled_secs', 0))} s in all.")
    if quota.concurrency:
        held_caption += (f" At most {quota.concurrency} (--max_concurrency times the worker "
                         "processes) wait for the limiter at once: near that, every request "
                         "slot was held back by a limit (429 retry waits may add more).")
    unknown = '<p class="nodata">not in the written files (see the source above)</p>'
    limited = [Line("rate_limited", "429 answers / s", BAD, [(r[0], r[4]) for r in known])]
    held = [Line("throttled", "tickets waiting (throttled s per s)", WARN,
                 [(r[0], r[5]) for r in known])]
    out += [
        "<h3>429s / s</h3>",
        figure("rate_limited_rate", limited_caption, rate_svg(
            "rate_limited_rate", limited, y_label="429 answers / s")
            if known or not rows else unknown),
        "<h3>Time held back by the limiter</h3>",
        figure("throttled_rate", held_caption, rate_svg(
            "throttled_rate", held, y_label="waiting (throttled s / s)")
            if known or not rows else unknown),
    ]
    return out
