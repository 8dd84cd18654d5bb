"""What the driver reads back from files: the input's size, and the outputs a run wrote.

* :func:`count_input` — the records the input holds, when cheap (the progress bar's total);
* :func:`count_written` — records under ``PREFIX/BASENAME-*`` (the ledger checks the counters
  against what is really on disk);
* :func:`existing_outputs` — an earlier run's files (preflight refuses to mix runs);
* :func:`completion_times` — when each written ticket finished (the report's throughput plot on
  runners whose workers are not in this process);
* :func:`request_timings` — when each written ticket's requests were sent, how many and their
  tokens (the report's quota plots on those runners).

Every shard is read through :mod:`transforms.shards`.

Example::

    count_written("out/run1", "results-20261128T120503Z-57a499")
"""

from __future__ import annotations

import datetime
from typing import List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.read import FORMAT_AUTO, FORMAT_JSONL, FORMAT_PARQUET, format_of
from transforms.shards import count_records, shard_rows, shard_values
from transforms.sinks import DEAD_LETTER_BASENAME, RESULTS_BASENAME, join_path


def _matched(patterns: List[str]) -> list:
    return [m for result in FileSystems.match(patterns) for m in result.metadata_list]


def count_input(pattern: str, input_format: str = FORMAT_AUTO,
                max_bytes: int = 256 * 1024 * 1024) -> Optional[int]:
    """Counts the records ``ReadTickets(pattern)`` will read, when that is cheap; else None.

    JSONL: non-blank lines, read only when the matched files hold at most ``max_bytes`` in all
    (compressed files are not counted). Parquet: the row counts of the footers.
    """
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    try:
        files = _matched(patterns)
        jsonl = [m for m in files if format_of(m.path, input_format) == FORMAT_JSONL]
        if sum(m.size_in_bytes for m in jsonl) > max_bytes:
            return None
        if any(CompressionTypes.detect_compression_type(m.path)
               != CompressionTypes.UNCOMPRESSED for m in jsonl):
            return None
        return sum(count_records(m.path, format_of(m.path, input_format) == FORMAT_PARQUET)
                   for m in files)
    except Exception:  # noqa: BLE001 - a total is a nicety; the read itself reports real errors
        return None


def count_written(prefix: str, basename: str) -> int:
    """Counts the records written under ``prefix/basename-*`` (JSONL lines or Parquet rows)."""
    return sum(count_records(m.path) for m in _matched([join_path(prefix, basename) + "-*"]))


def existing_outputs(prefix: str) -> List[str]:
    """Result, dead-letter and summary files already under ``prefix``."""
    return [m.path for m in _matched([join_path(prefix, RESULTS_BASENAME) + "-*",
                                      join_path(prefix, DEAD_LETTER_BASENAME) + "-*",
                                      join_path(prefix, "summary.json")])]


def ticket_costs(prefix: str, results_basename: str, dead_basename: str) -> List[float]:
    """What each ticket that reached the model cost: every result's ``cost_usd``, and every
    LLM-stage dead letter's (answers paid for and rejected)."""
    costs = [float(c or 0.0) for meta in _matched([join_path(prefix, results_basename) + "-*"])
             for c in shard_values(meta.path, "cost_usd")]
    for meta in _matched([join_path(prefix, dead_basename) + "-*"]):
        costs.extend(float(c or 0.0) for stage, c in shard_rows(meta.path, ("stage", "cost_usd"))
                     if stage == "llm")
    return costs


def parse_utc(text) -> Optional[float]:
    """POSIX seconds of an ISO-8601 time as the files write it (``...Z``); None if it is not one."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def completion_times(prefix: str) -> Tuple[List[float], List[float]]:
    """When each written ticket finished: results' ``finished_at`` and dead letters'
    ``last_attempt_at`` (parse-stage dead letters have none), as POSIX seconds."""
    def times(basename: str, field: str) -> List[float]:
        out = []
        for meta in _matched([join_path(prefix, basename) + "-*"]):
            out.extend(t for t in map(parse_utc, shard_values(meta.path, field))
                       if t is not None)
        return out
    return times(RESULTS_BASENAME, "finished_at"), times(DEAD_LETTER_BASENAME, "last_attempt_at")


class TicketTiming(NamedTuple):
    """What the files say about one ticket's requests (POSIX seconds)."""
    first_at: float
    last_at: float
    attempts: int
    prompt_tokens: int
    completion_tokens: int


def _number(value) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def request_timings(prefix: str) -> List[TicketTiming]:
    """When each written ticket's requests were sent, from the files alone.

    A result's last request was sent at ``finished_at`` minus its ``latency_ms``; its first
    is taken as ``started_at`` (the files do not keep it; the limiter's wait before it is
    included). A dead letter keeps ``first_attempt_at`` and ``last_attempt_at`` but no tokens.
    Answers from the response store (``cached``) sent nothing and are left out, as are parse
    dead letters (no attempt). The files record neither 429s nor the limiter's waits.
    """
    out: List[TicketTiming] = []
    fields = ("started_at", "finished_at", "latency_ms", "attempts", "prompt_tokens",
              "completion_tokens", "cached")
    for meta in _matched([join_path(prefix, RESULTS_BASENAME) + "-*"]):
        for started, finished, latency, attempts, prompt, completion, cached in shard_rows(
                meta.path, fields):
            end = parse_utc(finished)
            if cached or end is None or not attempts:
                continue
            last = end - _number(latency) / 1000.0
            out.append(TicketTiming(min(parse_utc(started) or last, last), last,
                                    int(attempts), int(_number(prompt)),
                                    int(_number(completion))))
    for meta in _matched([join_path(prefix, DEAD_LETTER_BASENAME) + "-*"]):
        for first, last, attempts in shard_rows(
                meta.path, ("first_attempt_at", "last_attempt_at", "attempts")):
            last_at = parse_utc(last)
            if last_at is None or not attempts:
                continue
            out.append(TicketTiming(parse_utc(first) or last_at, last_at, int(attempts), 0, 0))
    return out
