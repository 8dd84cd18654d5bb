"""The run report's plots as inline SVG: small helpers, no plotting library, nothing fetched.

* :func:`throughput_svg` — tickets finished per second over the run;
* :func:`rate_svg` — one per-second series over the run, with an optional limit line (the
  quota plots: requests/s, tokens/s, 429s/s, time held back by the limiter);
* :func:`latency_svg` — a latency histogram on a log axis with percentiles marked;
* :func:`bars_svg` — labelled horizontal bars;
* :func:`figure` — a plot with its caption, as the report places it.

Every plot's data element has ``class="data"`` (a ``polyline`` with ``data-series``, or a
``rect``); a limit line has ``class="limit"`` and ``data-limit`` (its value). A time plot's
``<svg>`` carries ``data-y-max`` and ``data-t-max``, so a reader can map points back to values
with :data:`FRAME`.

Example::

    rate_svg("requests_rate", [Line("requests", "requests / s", OK, [(0, 9.0), (1, 10.0)])],
             y_label="requests / s", limit=10.0, limit_label="limit 10 requests/s")
"""

from __future__ import annotations

import html
import math
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

# (seconds since start, answered, dead lettered)
Timeline = Sequence[Tuple[float, int, int]]
# (lower ms, upper ms, count)
Histogram = Sequence[Tuple[float, float, int]]

WIDTH, HEIGHT = 720, 260
#: Plot area inside an SVG: x from ``left`` to WIDTH - ``right``, y from HEIGHT - ``bottom``
#: (value 0) up to ``top`` (value ``data-y-max``).
FRAME = {"left": 64, "right": 16, "top": 16, "bottom": 44}
OK = "#2f7ed8"
BAD = "#d9534f"
WARN = "#e08e0b"
LIMIT = "#b52b27"
_MARK = "#444"
_MAX_POINTS = 600
_HALO = 'style="paint-order:stroke;stroke:#fff;stroke-width:3px"'


def fmt(value: Optional[float]) -> str:
    """A number for people: thousands separated, at most three decimals, "—" for None."""
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


def _svg_open(title: str, extra: str = "") -> List[str]:
    return [f'<svg role="img" aria-label="{html.escape(title)}" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"{extra}>']


def _frame(parts: List[str], y_max: float, x_label: str, y_label: str) -> None:
    x0, x1 = FRAME["left"], WIDTH - FRAME["right"]
    y0, y1 = HEIGHT - FRAME["bottom"], FRAME["top"]
    # Round tick values: 2 → 0.5 steps; 1, 2.5, 5 → fifths.
    mantissa = y_max / 10 ** math.floor(math.log10(y_max)) if y_max > 0 else 1
    steps = 4 if round(mantissa, 6) == 2 else 5
    for i in range(steps + 1):
        v = y_max * i / steps
        y = y0 - (y0 - y1) * i / steps
        parts.append(f'<line class="grid" x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>')
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>')
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>')
    parts.append(f'<text class="axis-label" x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" '
                 f'text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text class="axis-label" x="14" y="{(y0 + y1) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(y0 + y1) / 2})">{html.escape(y_label)}</text>')


def _time_axis(parts: List[str], t_max: float) -> str:
    """Ticks at round times along the x axis; returns the axis label (unit chosen by length)."""
    unit, scale = ("s", 1.0) if t_max <= 300 else ("min", 60.0) if t_max <= 3 * 3600 \
        else ("h", 3600.0)
    span = t_max / scale
    step = _nice_max(span / 6)
    x0, x1 = FRAME["left"], WIDTH - FRAME["right"]
    y0 = HEIGHT - FRAME["bottom"]
    i = 0
    while i * step <= span * 1.0001:
        x = x0 + (x1 - x0) * (i * step) / span
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}"/>')
        parts.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">'
                     f'{fmt(round(i * step, 3))}</text>')
        i += 1
    return f"time since start ({unit})"


def downsample(rows: Sequence[Tuple[float, ...]]) -> Tuple[List[Tuple[float, ...]], int]:
    """At most _MAX_POINTS rows: consecutive rows averaged into wider bins for long runs.

    Each row is ``(t, value, ...)`` with per-second values, so a bin's average is still a rate
    per second. None values stay None.

    Returns:
      The rows, and how many seconds each bin spans (1 when nothing was merged).
    """
    if len(rows) <= _MAX_POINTS:
        return [tuple(r) for r in rows], 1
    size = math.ceil(len(rows) / _MAX_POINTS)
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        merged = [chunk[0][0]]
        for col in range(1, len(chunk[0])):
            values = [c[col] for c in chunk]
            merged.append(None if any(v is None for v in values)
                          else sum(values) / len(values))
        out.append(tuple(merged))
    return out, size


def throughput_svg(timeline: Timeline) -> str:
    """Line chart: tickets finished per second over the run (answered; dead-lettered in red)."""
    points, _ = downsample(timeline)
    if not points:
        return '<p class="nodata">no completions were timed</p>'
    t_max = max(max(p[0] for p in points), 1.0)
    y_max = _nice_max(max(max(p[1] + p[2] for p in points), 1.0))
    x0, x1 = FRAME["left"], WIDTH - FRAME["right"]
    y0, y1 = HEIGHT - FRAME["bottom"], FRAME["top"]

    def xy(t, v):
        return f"{x0 + (x1 - x0) * t / t_max:.1f},{y0 - (y0 - y1) * v / y_max:.1f}"

    parts = _svg_open("throughput over time",
                      f' data-y-max="{y_max:g}" data-t-max="{t_max:g}"')
    x_label = _time_axis(parts, t_max)
    _frame(parts, y_max, x_label, "tickets / s")
    total = " ".join(xy(t, a + b) for t, a, b in points)
    parts.append(f'<polyline class="data" data-series="finished" fill="none" stroke="{OK}" '
                 f'stroke-width="1.6" points="{total}"/>')
    if any(b for _, _, b in points):
        dead = " ".join(xy(t, b) for t, _, b in points)
        parts.append(f'<polyline class="data" data-series="dead_lettered" fill="none" '
                     f'stroke="{BAD}" stroke-width="1.2" points="{dead}"/>')
    parts.append("</svg>")
    return "".join(parts)


class Line(NamedTuple):
    """One data line of :func:`rate_svg`."""
    key: str  # its ``data-series``
    label: str  # its legend text
    colour: str
    points: Sequence[Tuple[float, float]]  # (seconds since start, value per second)
    dotted: bool = False


def _legend(items: Sequence[Tuple[str, str, str]]) -> Tuple[List[str], float]:
    """Rows of ``(label, colour, dash)`` legend items, to sit above a plot.

    Returns:
      The SVG elements, and the height they take.
    """
    parts: List[str] = []
    left = FRAME["left"]
    x, y = left, 12
    for label, colour, dash in items:
        width = (30 if colour else 0) + 6.2 * len(label)  # about 6.2 px a character at 11 px
        if x + width > WIDTH - FRAME["right"] and x > left:
            x, y = left, y + 15
        if colour:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" '
                         f'stroke="{colour}" stroke-width="2"{dashed}/>')
        parts.append(f'<text class="legend" x="{x + (30 if colour else 0)}" y="{y}">'
                     f'{html.escape(label)}</text>')
        x += width + 18
    return parts, y + 2


def rate_svg(name: str, lines: Sequence[Line], *, y_label: str, limit: Optional[float] = None,
             limit_label: str = "", no_limit_note: str = "") -> str:
    """Line chart of per-second series over the run, with the configured limit as a line.

    Args:
      name: The plot's name (its ``aria-label``).
      lines: The data lines; the first is drawn on top.
      y_label: The y axis' label, with its unit.
      limit: The value of the limit line, or None for none.
      limit_label: The text along the limit line.
      no_limit_note: Said in the legend when there is no limit line (e.g. "no limit
        configured"); nothing when empty.

    Returns:
      An ``<svg>`` element (the legend above the plot, the plot in a ``<g
      class="plot-area">`` whose coordinates are those of :data:`FRAME`), or a "no data"
      paragraph when no line has a point.
    """
    if not any(line.points for line in lines):
        return '<p class="nodata">no data</p>'
    t_max = max(max(t for line in lines for t, _ in line.points), 1.0)
    top = max(v for line in lines for _, v in line.points)
    if limit:
        top = max(top, limit * 1.15)  # the limit line never sits on the frame's top edge
    y_max = _nice_max(top) if top > 1e-9 else 1.0
    x0, x1 = FRAME["left"], WIDTH - FRAME["right"]
    y0, y1 = HEIGHT - FRAME["bottom"], FRAME["top"]

    def y_of(v):
        return y0 - (y0 - y1) * v / y_max

    legend = [(line.label, line.colour, "2 3" if line.dotted else "") for line in lines]
    if limit:
        legend.append(("configured limit", LIMIT, "7 4"))
    elif no_limit_note:
        legend.append((f"({no_limit_note})", "", ""))
    legend_parts, band = _legend(legend)
    parts = [f'<svg role="img" aria-label="{html.escape(name)}" width="{WIDTH}" '
             f'height="{HEIGHT + band:.0f}" viewBox="0 0 {WIDTH} {HEIGHT + band:.0f}" '
             f'data-y-max="{y_max:g}" data-t-max="{t_max:g}">', *legend_parts,
             f'<g class="plot-area" transform="translate(0 {band:.0f})">']
    x_label = _time_axis(parts, t_max)
    _frame(parts, y_max, x_label, y_label)
    for line in reversed(lines):
        points = " ".join(f"{x0 + (x1 - x0) * t / t_max:.1f},{y_of(v):.1f}"
                          for t, v in line.points)
        dash = ' stroke-dasharray="2 3"' if line.dotted else ""
        parts.append(f'<polyline class="data" data-series="{html.escape(line.key)}" '
                     f'fill="none" stroke="{line.colour}" stroke-width="1.6"{dash} '
                     f'points="{points}"/>')
    if limit:
        y = y_of(limit)
        parts.append(f'<line class="limit" data-limit="{limit:g}" x1="{x0}" y1="{y:.1f}" '
                     f'x2="{x1}" y2="{y:.1f}" stroke="{LIMIT}" stroke-width="1.4" '
                     f'stroke-dasharray="7 4"/>')
        parts.append(f'<text class="limit-label" x="{x1 - 4}" y="{y - 5:.1f}" '
                     f'text-anchor="end" fill="{LIMIT}" {_HALO}>{html.escape(limit_label)}</text>')
    parts.append("</g></svg>")
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
    x0, x1 = FRAME["left"], WIDTH - FRAME["right"]
    y0, y1 = HEIGHT - FRAME["bottom"], FRAME["top"]

    def x_of(ms):
        return x0 + (x1 - x0) * (math.log10(max(ms, lo_all)) - log_lo) / (log_hi - log_lo)

    parts = _svg_open("latency distribution")
    _frame(parts, y_max, "latency (ms, log scale)", "requests")
    for decade in range(math.floor(log_lo), math.ceil(log_hi) + 1):
        for m in (1, 2, 5):
            ms = m * 10 ** decade
            if lo_all <= ms <= max(hi_all, lo_all * 1.5):
                parts.append(f'<text x="{x_of(ms):.1f}" y="{y0 + 14}" text-anchor="middle">'
                             f'{fmt(ms)}</text>')
    for lo, hi, count in bins:
        xa, xb = x_of(max(lo, lo_all)), x_of(hi)
        height = (y0 - y1) * count / y_max
        parts.append(f'<rect class="data" x="{xa:.1f}" y="{y0 - height:.1f}" '
                     f'width="{max(1.0, xb - xa - 1):.1f}" height="{height:.1f}" fill="{OK}">'
                     f'<title>{fmt(lo)}–{fmt(hi)} ms: {count}</title></rect>')
    for row, (name, value) in enumerate(percentiles.items()):
        if value is None:
            continue
        x = x_of(value)
        parts.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y0}" stroke="{_MARK}" '
                     f'stroke-dasharray="4 3"/>')
        # Staggered, so that close percentiles keep readable labels.
        parts.append(f'<text x="{x + 3:.1f}" y="{y1 + 10 + 13 * row}" {_HALO}>'
                     f'{name} {fmt(value)} ms</text>')
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
    parts = [f'<svg role="img" aria-label="{html.escape(title)}" width="{WIDTH}" '
             f'height="{height}" viewBox="0 0 {WIDTH} {height}">']
    for i, (label, value, colour) in enumerate(rows):
        y = 6 + i * row_h
        width = (WIDTH - left - right) * value / v_max
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">'
                     f'{html.escape(label)}</text>')
        parts.append(f'<rect class="data" x="{left}" y="{y + 2}" width="{max(width, 0.0):.1f}" '
                     f'height="{row_h - 6}" fill="{colour}"><title>{html.escape(label)}: '
                     f'{fmt(value)}{unit}</title></rect>')
        parts.append(f'<text x="{left + width + 6:.1f}" y="{y + 14}">{fmt(value)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def text_html(text: str) -> str:
    """Escaped text whose ``--flag`` names (and their values) are never broken across lines."""
    return re.sub(r"(--[a-z_]+(?: [0-9.,]+)?)", r'<span class="flag">\1</span>',
                  html.escape(text))


def figure(name: str, caption: str, body: str) -> str:
    """A plot in its ``<figure class="plot" data-plot=NAME>`` with its caption."""
    return (f'<figure class="plot" data-plot="{name}">{body}'
            f"<figcaption>{text_html(caption)}</figcaption></figure>")
