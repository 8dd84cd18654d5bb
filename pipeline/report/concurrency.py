"""The report's concurrency section: the in-flight limit ``--max_concurrency auto`` chose.

Drawn from the summary's ``concurrency`` figure
(:meth:`transforms.limits.concurrency.AdaptiveConcurrency.figure`): the limit over the run as a
step line, the answers per second (a sliding 10 s window) beside it, and the ceiling as the
limit line. A fixed ``--max_concurrency`` has no section.

Example::

    parts = concurrency_section(summary)   # [] unless the run used auto
"""

from __future__ import annotations

from typing import List

from pipeline.report.svg import OK, WARN, Line, figure, rate_svg


def concurrency_section(summary: dict) -> List[str]:
    """The section's HTML fragments (none without an ``auto`` figure)."""
    data = summary.get("concurrency") or {}
    points = data.get("by_time") or []
    if data.get("mode") != "auto" or not points:
        return []
    steps = []
    for point in points:
        if steps:
            steps.append((point["t"], steps[-1][1]))  # a step: the old limit up to the change
        steps.append((point["t"], float(point["limit"])))
    rate = [(p["t"], float(p["answers_per_sec"])) for p in points]
    caption = (f"--max_concurrency auto: the in-flight limit chosen over the run (final "
               f"{data.get('final')}, p50 {data.get('p50')}, {data.get('drops')} drops: 503s, "
               f"overloads or timeouts; {data.get('probes')} measurements of the no-load "
               f"latency, when the limit drops to a few for a moment), and the answers per "
               f"second over the last 10 s.")
    return ["<h2>Concurrency</h2>", figure("concurrency", caption, rate_svg(
        "concurrency", [Line("limit", "in-flight limit", OK, steps),
                        Line("answers", "answers / s", WARN, rate, dotted=True)],
        y_label="requests", limit=data.get("ceiling"), limit_label="ceiling"))]
