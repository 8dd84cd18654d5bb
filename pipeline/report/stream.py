"""The report's streaming section: first response time and backlog over the run.

Read from the files the job wrote: each result carries its ticket's ``origin.received_at`` and
its ``finished_at``. Per ``bucket_secs`` of the run: the first response time's p50 and p99
(seconds) of the results finished in it, and the backlog at its end (tickets received and not
yet answered, from the same records). The throughput plot above it is the batch report's.

Example::

    data = stream_data("out/live", "results-RUN", started_wall)
    html_parts = stream_section(data)
"""

from __future__ import annotations

import json
import math
from typing import List, NamedTuple, Tuple

from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import parse_utc
from pipeline.report.svg import OK, WARN, Line, figure, rate_svg
from transforms.sinks import join_path


class StreamData(NamedTuple):
    """``[(seconds since start, p50 s, p99 s)]`` per bucket and ``[(seconds, backlog)]``."""
    first_response: List[Tuple[float, float, float]]
    backlog: List[Tuple[float, float]]


def quantile(values: List[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def stream_data(prefix: str, basename: str, started_wall: float,
                bucket_secs: float = 10.0) -> StreamData:
    """The section's series from the result files ``prefix/basename-*``."""
    pairs = []
    for result in FileSystems.match([join_path(prefix, basename) + "-*"])[0].metadata_list:
        with FileSystems.open(result.path) as handle:
            for line in handle:
                record = json.loads(line)
                received = (record.get("origin") or {}).get("received_at")
                finished = parse_utc(record.get("finished_at"))
                if received and finished is not None:
                    pairs.append((float(received), finished))
    if not pairs:
        return StreamData([], [])
    buckets: dict = {}
    for received, finished in pairs:
        key = int(max(0.0, finished - started_wall) // bucket_secs)
        buckets.setdefault(key, []).append(max(0.0, finished - received))
    first = [((k + 1) * bucket_secs, quantile(v, 0.5), quantile(v, 0.99))
             for k, v in sorted(buckets.items())]
    arrivals = sorted(max(0.0, r - started_wall) for r, _ in pairs)
    finishes = sorted(max(0.0, f - started_wall) for _, f in pairs)
    end = int(math.ceil(finishes[-1])) + 1
    backlog, a, f = [], 0, 0
    for second in range(end + 1):
        while a < len(arrivals) and arrivals[a] <= second:
            a += 1
        while f < len(finishes) and finishes[f] <= second:
            f += 1
        backlog.append((float(second), float(a - f)))
    return StreamData(first, backlog)


def stream_section(data: StreamData) -> List[str]:
    """The section's HTML fragments."""
    return [
        "<h2>First response time and backlog</h2>",
        figure("first_response", "First response time (arrival — publish time or file "
               "modification time — to result), p50 and p99 of the results finished in each "
               "10-second bucket.", rate_svg("first_response", [
                   Line("p99", "p99 (s)", WARN, [(t, p99) for t, _, p99 in data.first_response]),
                   Line("p50", "p50 (s)", OK, [(t, p50) for t, p50, _ in data.first_response])],
                   y_label="seconds")),
        figure("backlog", "Backlog: tickets received and not yet answered.",
               rate_svg("backlog", [Line("backlog", "backlog", OK, data.backlog)],
                        y_label="tickets")),
    ]
