"""The run report: ``PREFIX/report.html``, one self-contained file (inline SVG, no scripts).

It shows the summary and these plots, drawn by :mod:`pipeline.report_svg` (no plotting library,
nothing fetched from the network when it is opened):

* throughput over time — tickets finished per second (answered and dead-lettered);
* the provider's quota — requests/s and tokens/s with the configured limits drawn as lines,
  429s per second, and the time held back by the rate limiter per second: whether the job ran
  at the provider's limit (:class:`Quota`, from :func:`quota_data`);
* latency — the histogram of the log-spaced latency buckets, with p50/p90/p99 marked;
* requests by outcome — answered, retries, rate limited, server errors, timeouts, and dead
  letters by reason;
* tokens — prompt and completion (and the cost, when the summary has ``cost_usd``).

Example::

    html = render(summary, timeline=[(0, 12, 0), (1, 30, 1)], histogram=[(80, 100, 7), ...],
                  quota=Quota(rows=[(0, 9, 1200, 0, 3.5)], source=SOURCE_LIVE,
                              requests_per_minute=600))
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline import progress
from pipeline.outputs import TicketTiming, request_timings
from pipeline.projection import projection_rows
from pipeline.report_svg import (BAD, OK, WARN, Histogram, Timeline, bars_svg, downsample, fmt,
                                 latency_svg, rate_svg, throughput_svg)

_LOG = logging.getLogger("ticketflow")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1000px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
h3{font-size:14px;margin:16px 0 4px}
.meta{color:#666;font-size:13px} .note{font-size:13px;color:#444;max-width:760px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:13px;color:#fff}
.ok{background:#3c963c}.bad{background:#c9302c}.warn{background:#e08e0b}
table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:0 0 8px} figcaption{font-size:13px;color:#555;margin-top:2px;max-width:720px}
svg text{font-size:11px;fill:#333} .axis{stroke:#999;stroke-width:1} .grid{stroke:#eee}
.nodata{color:#888;font-style:italic}
"""

_fmt = fmt
SOURCE_LIVE = "live"
SOURCE_FILES = "files"


@dataclasses.dataclass(frozen=True)
class Quota:
    """The quota plots' data: what the run asked of the provider, second by second.

    Attributes:
      rows: ``(seconds since start, requests, tokens, rate_limited, throttled_secs)`` per
        second, gap-free; the last two are None when the source does not know them.
      source: :data:`SOURCE_LIVE` (this process's live counters) or :data:`SOURCE_FILES`
        (the written results and dead letters).
      requests_per_minute: ``--requests_per_minute`` (0: no limit).
      tokens_per_minute: ``--tokens_per_minute`` (0: no limit).
      job_share: The part of those limits this job's workers may use together
        (``--worker_share`` times the worker processes; 1 by default).
      concurrency: ``--max_concurrency`` times the worker processes: at most this many
        tickets wait for the limiter at once (0: unknown).
    """
    rows: Sequence[Tuple[float, float, float, Optional[float], Optional[float]]]
    source: str
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    job_share: float = 1.0
    concurrency: int = 0


def _origin(first: int, start_wall: float) -> int:
    return int(start_wall) if start_wall and start_wall <= first else first


def quota_rows(seconds: Dict[int, Sequence[float]], start_wall: float, known: bool = True
               ) -> List[Tuple[float, float, float, Optional[float], Optional[float]]]:
    """Per-second ``{epoch second: [requests, tokens, rate_limited, throttled_secs]}`` → gap-free
    rows from the run's start (the same origin as the throughput timeline).

    Args:
      known: False when 429s and waits are unknown (the file source): they become None.
    """
    if not seconds:
        return []
    origin = _origin(min(seconds), start_wall)
    zero = (0.0, 0.0, 0.0, 0.0)
    rows = []
    for second in range(origin, max(seconds) + 1):
        requests, tokens, limited, throttled = seconds.get(second, zero)
        rows.append((float(second - origin), requests, tokens,
                     limited if known else None, throttled if known else None))
    return rows


def quota_from_timings(timings: Iterable[TicketTiming], start_wall: float) -> List[tuple]:
    """The written files' request times (:func:`pipeline.outputs.request_timings`) → rows."""
    buckets = progress.QuotaSeconds()
    for t in timings:
        buckets.ticket(t.attempts, 0, t.tokens, 0.0, t.first_at, t.last_at)
    return quota_rows(buckets.seconds, start_wall, known=False)


def quota_data(config, live: bool, start_wall: float) -> Quota:
    """The quota plots' data for a finished run: the live counters when this process saw the
    work (``live`` and any request counted), else the written files.

    Args:
      config: The run's ``JobConfig`` (limits, output prefix, worker share).
      live: Whether the workers ran in this process.
      start_wall: POSIX time the run started (the plots' origin).
    """
    limits = {"requests_per_minute": config.requests_per_minute,
              "tokens_per_minute": config.tokens_per_minute,
              "job_share": config.worker_share * config.worker_processes,
              "concurrency": config.llm.max_concurrency * config.worker_processes}
    seconds = progress.STATS.snapshot()["quota"] if live else {}
    if seconds:
        return Quota(quota_rows(seconds, start_wall), SOURCE_LIVE, **limits)
    try:
        rows = quota_from_timings(request_timings(config.output), start_wall)
    except Exception:  # noqa: BLE001 - the plots are a nicety; the summary is what matters
        _LOG.debug("cannot read request times", exc_info=True)
        rows = []
    return Quota(rows, SOURCE_FILES, **limits)


def outcome_rows(summary: dict) -> List[Tuple[str, float, str]]:
    """The "requests by outcome" bars from a summary."""
    rows = [
        ("answered (ok)", summary.get("succeeded", 0), OK),
        ("retries", summary.get("retries", 0), WARN),
        ("rate limited (429)", summary.get("rate_limited", 0), WARN),
        ("server errors (5xx)", summary.get("server_errors", 0), WARN),
        ("timeouts", summary.get("timeouts", 0), WARN),
    ]
    for reason, count in sorted((summary.get("dead_letter_reasons") or {}).items()):
        rows.append((f"dead letter: {reason}", count, BAD))
    return rows


def token_rows(summary: dict) -> List[Tuple[str, float, str]]:
    rows = [("prompt tokens", summary.get("prompt_tokens", 0), OK),
            ("completion tokens", summary.get("completion_tokens", 0), "#6f42c1")]
    return rows


_SOURCE_NOTES = {
    SOURCE_LIVE: (
        "Source: this process's live counters. The counters move when a ticket finishes, so "
        "each finished ticket is placed at its own attempt times instead: its requests at its "
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
    "How to read: a job held at its limit runs along the dashed line while tickets wait for "
    "the limiter; 429s mean the provider's own limit is lower than the configured one (or is "
    "shared with other clients); well below the line with nothing waiting, the limit did not "
    "bound the run (concurrency, latency or the input did). Answers from the response store "
    "and the Batch API are left out: they do not count against the online limits.")


def _busy(points: Sequence[Tuple[float, float]]) -> List[float]:
    """The values from the first non-zero second to the last (the ramp-down tail kept)."""
    busy = [i for i, (_, v) in enumerate(points) if v]
    return [v for _, v in points[busy[0]:busy[-1] + 1]] if busy else []


def _rate_caption(what: str, unit: str, points, limit: Optional[float], flag: str,
                  per_minute: float, job_share: float) -> str:
    values = _busy(points)
    if limit:
        text = (f"Configured limit {fmt(round(limit, 3))} {unit}/s (dashed; {flag} "
                f"{fmt(per_minute)}).")
        if abs(job_share - 1.0) > 0.01:
            text += (f" This job's workers may use {fmt(round(job_share * 100, 1))}% of it "
                     f"(--worker_share): {fmt(round(limit * job_share, 3))} {unit}/s.")
    else:
        text = f"No limit configured ({flag} 0): no limit line."
    if not values:
        return f"{what}. {text} Nothing was sent."
    mean = sum(values) / len(values)
    text += (f" Mean {fmt(round(mean, 2))} {unit}/s over the {len(values)} s from the first "
             f"to the last")
    if limit:
        near = sum(1 for v in values if v >= 0.9 * limit)
        text += (f" ({fmt(round(100 * mean / limit, 1))}% of the limit; at 90% of it or more "
                 f"in {near} of those seconds)")
    return f"{what}. {text}; peak {fmt(round(max(values), 2))} {unit}/s."


def _quota_section(quota: Optional[Quota], summary: dict) -> List[str]:
    if quota is None:
        return []
    out = ["<h2>Provider quota: did the job run at the limit?</h2>",
           f'<p class="note">{html.escape(_HOW_TO_READ)}</p>',
           f'<p class="note">{html.escape(_SOURCE_NOTES.get(quota.source, ""))}</p>']
    rows, bin_secs = downsample(quota.rows)
    per = "" if bin_secs == 1 else f" (averaged over {bin_secs}-second bins)"
    rpm, tpm = quota.requests_per_minute or 0.0, quota.tokens_per_minute or 0.0
    plots = [
        ("requests_rate", "Requests / s", "Requests sent per second", 1, "requests / s",
         "requests sent / s", OK, rpm / 60 or None, "--requests_per_minute", rpm, "requests",
         ""),
        ("tokens_rate", "Tokens / s", "Tokens per second (prompt + completion, as the answers "
         "reported them, at the time the request was sent)", 2, "tokens / s",
         "tokens / s (prompt + completion)", "#6f42c1", tpm / 60 or None,
         "--tokens_per_minute", tpm, "tokens",
         " Our limiter (like providers that count tokens when they admit a request) reserves "
         "--max_tokens for each answer, so a run held at this limit plots below the line."
         if tpm else ""),
    ]
    for (name, title, what, col, y_label, series, colour, limit, flag, per_minute, unit,
         extra) in plots:
        points = [(r[0], r[col]) for r in rows]
        label = (f"limit {fmt(round(limit, 3))} {unit}/s ({flag} {fmt(per_minute)})"
                 if limit else "")
        caption = _rate_caption(what + per, unit, points, limit, flag, per_minute,
                                quota.job_share) + extra
        out += [f"<h3>{title}</h3>", _figure(name, caption, rate_svg(
            name, points, y_label=y_label, series=series, colour=colour, limit=limit,
            limit_label=label, no_limit_note="no limit configured"))]
    known = [r for r in rows if r[3] is not None]
    limited_caption = (f"Answers 429 (rate limited) per second{per}, at the attempt times; "
                       f"{fmt(summary.get('rate_limited', 0))} in all.")
    held_caption = (f"Time held back per second{per}: the seconds tickets spent waiting for the "
                    "rate limiter or a 429's retry-after, per second of the run, which is how "
                    "many tickets were waiting at once on average; "
                    f"{fmt(summary.get('throttled_secs', 0))} s in all.")
    if quota.concurrency:
        held_caption += (f" At most {quota.concurrency} (--max_concurrency times the worker "
                         "processes) wait for the limiter at once: near it, every request slot "
                         "was held back by the limit (429 retry waits may add more).")
    unknown = '<p class="nodata">not in the written files (see the source above)</p>'
    out += [
        "<h3>429s / s</h3>",
        _figure("rate_limited_rate", limited_caption, rate_svg(
            "rate_limited_rate", [(r[0], r[3]) for r in known], y_label="429 answers / s",
            series="429 answers / s", colour=BAD) if known or not rows else unknown),
        "<h3>Time held back by the limiter</h3>",
        _figure("throttled_rate", held_caption, rate_svg(
            "throttled_rate", [(r[0], r[4]) for r in known],
            y_label="waiting (throttled s / s)", series="tickets waiting (throttled s per s)",
            colour=WARN) if known or not rows else unknown),
    ]
    return out


def _table(items: Iterable[Tuple[str, object]]) -> str:
    cells = []
    for key, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cells.append(f'<tr><th>{html.escape(key)}</th><td class="n">{_fmt(value)}</td></tr>')
        else:
            text = "—" if value is None else str(value)
            cells.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _figure(name: str, caption: str, body: str) -> str:
    return (f'<figure class="plot" data-plot="{name}">{body}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render(summary: dict, timeline: Timeline, histogram: Histogram,
           quota: Optional[Quota] = None) -> str:
    """The report's HTML.

    Args:
      summary: The run's summary (as written to summary.json).
      timeline: ``(seconds since start, answered, dead lettered)`` per second.
      histogram: ``(lower ms, upper ms, count)`` latency buckets.
      quota: The quota plots' data; without it, no quota section.
    """
    interrupted = summary.get("interrupted")
    balanced = summary.get("ledger_balanced")
    badges = ['<span class="badge ok">ledger balanced</span>' if balanced else
              '<span class="badge bad">ledger NOT balanced</span>']
    if interrupted:
        badges.append('<span class="badge warn">interrupted: unsent tickets are dead letters '
                      '"interrupted"</span>')
    projection = summary.get("projection")
    if summary.get("sample"):
        badges.append(f'<span class="badge warn">a SAMPLE of {int(summary["sample"])} tickets '
                      "(--sample): see the projection</span>")
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    percentiles = {"p50": summary.get("latency_ms_p50"), "p90": summary.get("latency_ms_p90"),
                   "p99": summary.get("latency_ms_p99")}
    scalars = [(k, v) for k, v in summary.items() if not isinstance(v, (dict, list))]
    tokens_caption = "Tokens, from the provider's usage"
    tokens_rows = token_rows(summary)
    if summary.get("cost_usd") is not None:
        tokens_caption += f"; estimated cost ${summary['cost_usd']:.4f}"
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ticketflow run report — {html.escape(str(summary.get('output', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>ticketflow run report</h1>",
        f'<p class="meta">{html.escape(str(summary.get("output", "")))} · model '
        f'{html.escape(str(summary.get("model", "")))} · generated {generated}</p>',
        "<p>" + " ".join(badges) + "</p>",
        "<h2>Summary</h2>",
        _table(scalars),
    ]
    if projection:
        sections += ["<h2>Projection of the full job</h2>",
                     _table((name.strip(), text) for name, text in projection_rows(projection))]
    sections += [
        "<h2>Throughput over time</h2>",
        _figure("throughput", "Tickets finished per second (blue: all; red: dead-lettered).",
                throughput_svg(timeline)),
        *_quota_section(quota, summary),
        "<h2>Latency</h2>",
        _figure("latency", "Latency of successful requests (log-spaced buckets); dashed: "
                f"p50 {_fmt(percentiles['p50'])} ms, p90 {_fmt(percentiles['p90'])} ms, "
                f"p99 {_fmt(percentiles['p99'])} ms.", latency_svg(histogram, percentiles)),
        "<h2>Requests by outcome</h2>",
        _figure("outcomes", "Answered tickets, retried and failed requests, and dead letters by "
                "reason.", bars_svg("requests by outcome", outcome_rows(summary))),
        "<h2>Tokens</h2>",
        _figure("tokens", tokens_caption, bars_svg("tokens", tokens_rows)),
    ]
    reasons = summary.get("dead_letter_reasons") or {}
    if reasons:
        sections += ["<h2>Dead letters by reason</h2>", _table(sorted(reasons.items()))]
    if isinstance(summary.get("simulator"), dict):
        sections += ["<h2>Simulator</h2>",
                     _table((k, v if not isinstance(v, (dict, list)) else str(v))
                            for k, v in summary["simulator"].items())]
    sections.append("</body></html>")
    return "\n".join(sections)


def timeline_from_per_second(per_second: Dict[int, Tuple[int, int]], start_wall: float) -> Timeline:
    """Per-second ``{epoch second: (answered, dead)}`` counts → a gap-free timeline."""
    if not per_second:
        return []
    first, last = min(per_second), max(per_second)
    origin = _origin(first, start_wall)
    return [(float(s - origin), *per_second.get(s, (0, 0))) for s in range(origin, last + 1)]


def timeline_from_times(ok_times: Iterable[float], dead_times: Iterable[float],
                        start_wall: float) -> Timeline:
    """Completion timestamps (POSIX seconds) → a per-second timeline."""
    per_second: Dict[int, List[int]] = {}
    for index, times in ((0, ok_times), (1, dead_times)):
        for t in times:
            slot = per_second.setdefault(int(t), [0, 0])
            slot[index] += 1
    return timeline_from_per_second({k: tuple(v) for k, v in per_second.items()}, start_wall)


def write(path: str, summary: dict, timeline: Timeline, histogram: Histogram,
          quota: Optional[Quota] = None) -> None:
    """Writes the report to ``path`` (local or gs://)."""
    with FileSystems.create(path, mime_type="text/html") as handle:
        handle.write(render(summary, timeline, histogram, quota).encode("utf-8"))
