"""The run report: ``PREFIX/report.html``, one self-contained file (inline SVG, no scripts).

It shows the summary and these plots, drawn by :mod:`pipeline.report.svg` (no plotting library,
nothing fetched from the network when it is opened):

* throughput over time — tickets finished per second (answered and dead-lettered);
* the provider's quota — requests/s and tokens/s with the configured limits drawn as lines,
  429s per second, and the time held back by the rate limiter per second: whether the job ran
  at the provider's limit (:mod:`pipeline.report.quota`);
* latency — the histogram of the log-spaced latency buckets, with p50/p90/p99 marked;
* requests by outcome — answered, retries, rate limited, server errors, timeouts, and dead
  letters by reason;
* tokens — prompt and completion (and the cost, when the summary has ``cost_usd``), and the
  provider's prompt cache: tokens read and written, and what caching saved;
* with ``--endpoints``, a table of each endpoint's requests, answers, 429s, errors and share.

Example::

    html = render(summary, timeline=[(0, 12, 0), (1, 30, 1)], histogram=[(80, 100, 7), ...],
                  quota=quota_data(config, live=True, start_wall=started))
"""

from __future__ import annotations

import datetime
import html
from typing import Dict, Iterable, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.projection import projection_rows
from pipeline.report.quota import SOURCE_FILES, SOURCE_LIVE, Quota, quota_data, quota_section
from pipeline.report.quota import origin as quota_origin
from pipeline.report.concurrency import concurrency_section
from pipeline.report.stream import StreamData, stream_data, stream_section
from pipeline.report.svg import (BAD, OK, WARN, Histogram, Timeline, bars_svg, figure, fmt,
                                 latency_svg, throughput_svg)

__all__ = ["Quota", "SOURCE_FILES", "SOURCE_LIVE", "quota_data", "render", "stream_data",
           "timeline_from_per_second", "timeline_from_times", "write"]

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
.nodata{color:#888;font-style:italic} .flag{white-space:nowrap}
"""

_fmt = fmt


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
    if summary.get("cache_read_tokens") or summary.get("cache_write_tokens"):
        rows += [("of which cache reads", summary.get("cache_read_tokens", 0), "#17a2b8"),
                 ("of which cache writes", summary.get("cache_write_tokens", 0), WARN)]
    return rows


def cache_rows(summary: dict) -> List[Tuple[str, object]]:
    """The cost section's prompt cache table (empty when nothing was read or written)."""
    if not (summary.get("cache_read_tokens") or summary.get("cache_write_tokens")):
        return []
    saved = summary.get("cache_saved_usd") or 0.0
    return [("provider", summary.get("provider")),
            ("cache read tokens", summary.get("cache_read_tokens", 0)),
            ("cache write tokens", summary.get("cache_write_tokens", 0)),
            ("saved by the prompt cache (USD)", f"{saved:.6f}"),
            ("cost with the cache (USD)", f"{summary.get('cost_usd') or 0.0:.6f}"),
            ("cost without it (USD)", f"{(summary.get('cost_usd') or 0.0) + saved:.6f}")]


def _table(items: Iterable[Tuple[str, object]]) -> str:
    cells = []
    for key, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cells.append(f'<tr><th>{html.escape(key)}</th><td class="n">{_fmt(value)}</td></tr>')
        else:
            text = "—" if value is None else str(value)
            cells.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _endpoints_table(endpoints: Dict[str, dict]) -> str:
    """``--endpoints``: one row per endpoint, its requests, answers, 429s, errors and share."""
    head = "".join(f'<th class="n">{name}</th>' for name in
                   ("requests", "answered", "rate limited", "errors", "share"))
    rows = [f"<tr><th>endpoint</th>{head}</tr>"]
    for name, e in endpoints.items():
        cells = "".join(f'<td class="n">{_fmt(e[k])}</td>' for k in
                        ("requests", "succeeded", "rate_limited", "errors"))
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}"
                    f'<td class="n">{e["share"]:.1%}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def render(summary: dict, timeline: Timeline, histogram: Histogram,
           quota: Optional[Quota] = None, stream: Optional[StreamData] = None) -> str:
    """The report's HTML.

    Args:
      summary: The run's summary (as written to summary.json).
      timeline: ``(seconds since start, answered, dead lettered)`` per second.
      histogram: ``(lower ms, upper ms, count)`` latency buckets.
      quota: The quota plots' data; without it, no quota section.
      stream: A streaming job's first response and backlog series (``pipeline/report/stream.py``).
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
        figure("throughput", "Tickets finished per second (blue: all; red: dead-lettered).",
                throughput_svg(timeline)),
        *(stream_section(stream) if stream is not None else []),
        *concurrency_section(summary),
        *quota_section(quota, summary),
        "<h2>Latency</h2>",
        figure("latency", "Latency of successful requests (log-spaced buckets); dashed: "
                f"p50 {_fmt(percentiles['p50'])} ms, p90 {_fmt(percentiles['p90'])} ms, "
                f"p99 {_fmt(percentiles['p99'])} ms.", latency_svg(histogram, percentiles)),
        "<h2>Requests by outcome</h2>",
        figure("outcomes", "Answered tickets, retried and failed requests, and dead letters by "
                "reason.", bars_svg("requests by outcome", outcome_rows(summary))),
        "<h2>Tokens</h2>",
        figure("tokens", tokens_caption, bars_svg("tokens", tokens_rows)),
    ]
    cache = cache_rows(summary)
    if cache:
        sections += ["<h3>Prompt cache</h3>",
                     '<p class="note">Cache reads are billed at the cached-input price, writes at '
                     "the write price of --cache_ttl; the saving is those tokens at the plain "
                     "input price minus what they cost.</p>", _table(cache)]
    if summary.get("endpoints"):
        sections += ["<h2>Endpoints</h2>", _endpoints_table(summary["endpoints"])]
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
    origin = quota_origin(first, start_wall)
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
          quota: Optional[Quota] = None, stream: Optional[StreamData] = None) -> None:
    """Writes the report to ``path`` (local or gs://)."""
    with FileSystems.create(path, mime_type="text/html") as handle:
        handle.write(render(summary, timeline, histogram, quota, stream).encode("utf-8"))
