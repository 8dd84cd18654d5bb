"""The run report: ``PREFIX/report.html``, one self-contained file (inline SVG, no scripts).

It shows the summary and four plots drawn by the small SVG helpers below (no plotting library,
nothing fetched from the network when it is opened):

* throughput over time — tickets finished per second (answered and dead-lettered);
* latency — the histogram of the log-spaced latency buckets, with p50/p90/p99 marked;
* requests by outcome — answered, retries, rate limited, server errors, timeouts, and dead
  letters by reason;
* tokens — prompt and completion (and the cost, when the summary has ``cost_usd``).

Example::

    html = render(summary, timeline=[(0, 12, 0), (1, 30, 1)], histogram=[(80, 100, 7), ...])
"""

from __future__ import annotations

import datetime
import html
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.projection import projection_rows

# (seconds since start, answered, dead lettered)
Timeline = Sequence[Tuple[float, int, int]]
# (lower ms, upper ms, count)
Histogram = Sequence[Tuple[float, float, int]]

_W, _H = 720, 260
_M = {"left": 64, "right": 16, "top": 16, "bottom": 44}
_OK = "#2f7ed8"
_BAD = "#d9534f"
_MARK = "#444"
_MAX_POINTS = 600

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1000px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;font-size:13px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:13px;color:#fff}
.ok{background:#3c963c}.bad{background:#c9302c}.warn{background:#e08e0b}
table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:0 0 8px} figcaption{font-size:13px;color:#555;margin-top:2px}
svg text{font-size:11px;fill:#333} .axis{stroke:#999;stroke-width:1} .grid{stroke:#eee}
.nodata{color:#888;font-style:italic}
"""


def _fmt(value: float) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    return f"{int(value):,}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * exp >= value:
            return step * exp
    return 10 * exp


def _svg_open(title: str) -> List[str]:
    return [f'<svg role="img" aria-label="{html.escape(title)}" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}">']


def _frame(parts: List[str], y_max: float, x_label: str, y_label: str) -> None:
    x0, x1 = _M["left"], _W - _M["right"]
    y0, y1 = _H - _M["bottom"], _M["top"]
    for i in range(5):
        v = y_max * i / 4
        y = y0 - (y0 - y1) * i / 4
        parts.append(f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>')
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{_H - 6}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{(y0 + y1) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(y0 + y1) / 2})">{html.escape(y_label)}</text>')


def _downsample(timeline: Timeline) -> List[Tuple[float, float, float]]:
    """At most _MAX_POINTS points: wider bins (averaged per second) for long runs."""
    if len(timeline) <= _MAX_POINTS:
        return [(t, float(a), float(b)) for t, a, b in timeline]
    size = math.ceil(len(timeline) / _MAX_POINTS)
    out = []
    for i in range(0, len(timeline), size):
        chunk = timeline[i:i + size]
        out.append((chunk[0][0], sum(c[1] for c in chunk) / len(chunk),
                    sum(c[2] for c in chunk) / len(chunk)))
    return out


def throughput_svg(timeline: Timeline) -> str:
    """Line chart: tickets finished per second over the run (answered; dead-lettered in red)."""
    points = _downsample(timeline)
    if not points:
        return '<p class="nodata">no completions were timed</p>'
    t_max = max(max(p[0] for p in points), 1.0)
    y_max = _nice_max(max(max(p[1] + p[2] for p in points), 1.0))
    x0, x1 = _M["left"], _W - _M["right"]
    y0, y1 = _H - _M["bottom"], _M["top"]

    def xy(t, v):
        return f"{x0 + (x1 - x0) * t / t_max:.1f},{y0 - (y0 - y1) * v / y_max:.1f}"

    parts = _svg_open("throughput over time")
    _frame(parts, y_max, "seconds since start", "tickets / s")
    for i in range(6):
        t = t_max * i / 5
        parts.append(f'<text x="{x0 + (x1 - x0) * i / 5:.1f}" y="{y0 + 14}" '
                     f'text-anchor="middle">{_fmt(round(t, 1))}</text>')
    total = " ".join(xy(t, a + b) for t, a, b in points)
    parts.append(f'<polyline class="data" data-series="finished" fill="none" stroke="{_OK}" '
                 f'stroke-width="1.6" points="{total}"/>')
    if any(b for _, _, b in points):
        dead = " ".join(xy(t, b) for t, _, b in points)
        parts.append(f'<polyline class="data" data-series="dead_lettered" fill="none" '
                     f'stroke="{_BAD}" stroke-width="1.2" points="{dead}"/>')
    parts.append("</svg>")
    return "".join(parts)


def latency_svg(histogram: Histogram, percentiles: Dict[str, Optional[float]]) -> str:
    """Histogram of latency buckets on a log axis, with the percentiles marked."""
    bins = [(lo, hi, c) for lo, hi, c in histogram if c and hi != float("inf")]
    tail = [(lo, hi, c) for lo, hi, c in histogram if c and hi == float("inf")]
    if tail:  # the open last bucket: drawn as wide as the one before it
        lo = tail[0][0]
        bins.append((lo, lo * 1.26, tail[0][2]))
    if not bins:
        return '<p class="nodata">no successful request, so no latency</p>'
    # One bucket's width of margin on each side, so a narrow distribution is not a wall of bars.
    lo_all = max(0.5, (min(lo for lo, _, _ in bins) or 0.5) / 1.6)
    hi_all = max(hi for _, hi, _ in bins) * 1.6
    log_lo, log_hi = math.log10(lo_all), math.log10(max(hi_all, lo_all * 1.5))
    y_max = _nice_max(max(c for _, _, c in bins))
    x0, x1 = _M["left"], _W - _M["right"]
    y0, y1 = _H - _M["bottom"], _M["top"]

    def x_of(ms):
        return x0 + (x1 - x0) * (math.log10(max(ms, lo_all)) - log_lo) / (log_hi - log_lo)

    parts = _svg_open("latency distribution")
    _frame(parts, y_max, "latency (ms, log scale)", "requests")
    for decade in range(math.floor(log_lo), math.ceil(log_hi) + 1):
        for m in (1, 2, 5):
            ms = m * 10 ** decade
            if lo_all <= ms <= max(hi_all, lo_all * 1.5):
                parts.append(f'<text x="{x_of(ms):.1f}" y="{y0 + 14}" text-anchor="middle">'
                             f'{_fmt(ms)}</text>')
    for lo, hi, count in bins:
        xa, xb = x_of(max(lo, lo_all)), x_of(hi)
        height = (y0 - y1) * count / y_max
        parts.append(f'<rect class="data" x="{xa:.1f}" y="{y0 - height:.1f}" '
                     f'width="{max(1.0, xb - xa - 1):.1f}" height="{height:.1f}" fill="{_OK}">'
                     f'<title>{_fmt(lo)}–{_fmt(hi)} ms: {count}</title></rect>')
    for row, (name, value) in enumerate(percentiles.items()):
        if value is None:
            continue
        x = x_of(value)
        parts.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y0}" stroke="{_MARK}" '
                     f'stroke-dasharray="4 3"/>')
        # Staggered, so that close percentiles keep readable labels.
        parts.append(f'<text x="{x + 3:.1f}" y="{y1 + 10 + 13 * row}" '
                     f'style="paint-order:stroke;stroke:#fff;stroke-width:3px">'
                     f'{name} {_fmt(value)} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(title: str, rows: Sequence[Tuple[str, float, str]], unit: str = "") -> str:
    """Horizontal bars: ``(label, value, colour)`` rows."""
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return '<p class="nodata">nothing to show</p>'
    left, right = 190, 90
    row_h = 22
    height = 12 + row_h * len(rows)
    v_max = max(max(v for _, v, _ in rows), 1e-9)
    parts = [f'<svg role="img" aria-label="{html.escape(title)}" width="{_W}" '
             f'height="{height}" viewBox="0 0 {_W} {height}">']
    for i, (label, value, colour) in enumerate(rows):
        y = 6 + i * row_h
        width = (_W - left - right) * value / v_max
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">'
                     f'{html.escape(label)}</text>')
        parts.append(f'<rect class="data" x="{left}" y="{y + 2}" width="{max(width, 0.0):.1f}" '
                     f'height="{row_h - 6}" fill="{colour}"><title>{html.escape(label)}: '
                     f'{_fmt(value)}{unit}</title></rect>')
        parts.append(f'<text x="{left + width + 6:.1f}" y="{y + 14}">{_fmt(value)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def outcome_rows(summary: dict) -> List[Tuple[str, float, str]]:
    """The "requests by outcome" bars from a summary."""
    rows = [
        ("answered (ok)", summary.get("succeeded", 0), _OK),
        ("retries", summary.get("retries", 0), "#e08e0b"),
        ("rate limited (429)", summary.get("rate_limited", 0), "#e08e0b"),
        ("server errors (5xx)", summary.get("server_errors", 0), "#e08e0b"),
        ("timeouts", summary.get("timeouts", 0), "#e08e0b"),
    ]
    for reason, count in sorted((summary.get("dead_letter_reasons") or {}).items()):
        rows.append((f"dead letter: {reason}", count, _BAD))
    return rows


def token_rows(summary: dict) -> List[Tuple[str, float, str]]:
    rows = [("prompt tokens", summary.get("prompt_tokens", 0), _OK),
            ("completion tokens", summary.get("completion_tokens", 0), "#6f42c1")]
    return rows


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


def render(summary: dict, timeline: Timeline, histogram: Histogram) -> str:
    """The report's HTML.

    Args:
      summary: The run's summary (as written to summary.json).
      timeline: ``(seconds since start, answered, dead lettered)`` per second.
      histogram: ``(lower ms, upper ms, count)`` latency buckets.
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
    origin = int(start_wall) if start_wall and start_wall <= first else first
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


def write(path: str, summary: dict, timeline: Timeline, histogram: Histogram) -> None:
    """Writes the report to ``path`` (local or gs://)."""
    with FileSystems.create(path, mime_type="text/html") as handle:
        handle.write(render(summary, timeline, histogram).encode("utf-8"))
