"""Plain, frozen, picklable records that flow through the pipeline.

A :class:`Ticket` is what validation produces; the LLM step turns it into a :class:`Result` or a
:class:`DeadLetter`. Failures are data: a dead letter carries the input, the stage, a stable reason
code and the timings, never an exception object.

Example::

    ticket = Ticket(id="T-1", subject="Refund", body="Please refund order 42.", fields={...})
    result.to_dict()  # JSON-ready, the shape written to PREFIX/results-*
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Dict, Mapping, Optional, Tuple

import orjson

# How much of an unparseable input line a dead letter keeps.
MAX_RAW_CHARS = 2000

STAGE_PARSE = "parse"
STAGE_LLM = "llm"

#: The tagged output that carries dead letters out of every step that makes them.
DEAD_LETTER_TAG = "dead_letter"


def utc_iso(ts: float) -> str:
    """Formats a POSIX timestamp as an ISO-8601 UTC string with milliseconds."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _iso_or_none(ts: Optional[float]) -> Optional[str]:
    return utc_iso(ts) if ts else None


class Ticket:
    """A validated input record (immutable, picklable).

    The input record is kept as compact JSON text, not as a dict: Beam's local runner holds every
    element of a shuffle in memory as a Python object, and a parsed record is several times larger
    than its text (benchmarks/RESULTS.md). ``fields`` parses it on use.

    Attributes:
      id: The ticket id, as a string (numbers in the input are turned into their decimal form).
      subject: The subject line, or "" when the input has none.
      body: The text sent to the model.
      fields: Every field of the input record, JSON-safe, carried through to the output.
      source: The file the record came from, when known.
      line: The 1-based line (JSONL) or row (Parquet) in that file, when known.
      batch_outcome: With ``--api batch``, what the provider's Batch API answered for this
        ticket's request (one outcome line, JSON text; see :mod:`transforms.llm.batch`), or None.
      origin: In a streaming job, where and when the ticket arrived: ``received_at`` (POSIX
        seconds: the message's publish time, or the file's modification time) and, from
        Pub/Sub, ``message_id``, ``publish_time`` and ``attributes``; from a watched folder,
        ``file``. Results and dead letters carry it; None in a batch job.
    """
    __slots__ = ("id", "subject", "body", "fields_json", "source", "line", "batch_outcome",
                 "origin")

    def __init__(self, id: str, subject: str, body: str,  # pylint: disable=redefined-builtin
                 fields: Mapping[str, Any], source: Optional[str] = None,
                 line: Optional[int] = None, *, fields_json: Optional[str] = None,
                 batch_outcome: Optional[str] = None, origin: Optional[Mapping] = None):
        set_ = object.__setattr__
        set_(self, "id", id)
        set_(self, "subject", subject)
        set_(self, "body", body)
        set_(self, "fields_json", fields_json if fields_json is not None else json.dumps(
            fields, ensure_ascii=False, separators=(",", ":")))
        set_(self, "source", source)
        set_(self, "line", line)
        set_(self, "batch_outcome", batch_outcome)
        set_(self, "origin", origin)

    @property
    def fields(self) -> Dict[str, Any]:
        try:
            return orjson.loads(self.fields_json)  # ~2x faster: it is read once per answer
        except orjson.JSONDecodeError:
            return json.loads(self.fields_json)  # NaN, ints over 64 bits: json.dumps wrote them

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def with_batch_outcome(self, outcome: Optional[str]) -> "Ticket":
        """The same ticket carrying a Batch API outcome line."""
        return Ticket(self.id, self.subject, self.body, None, self.source, self.line,
                      fields_json=self.fields_json, batch_outcome=outcome, origin=self.origin)

    def __reduce__(self):
        return (_ticket, (self.id, self.subject, self.body, self.fields_json, self.source,
                          self.line, self.batch_outcome, self.origin))

    def _key(self):
        return (self.id, self.subject, self.body, self.fields_json, self.source, self.line,
                self.batch_outcome, json.dumps(self.origin, sort_keys=True, default=str)
                if self.origin else None)

    def __eq__(self, other):
        return isinstance(other, Ticket) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Ticket(id={self.id!r}, subject={self.subject!r}, source={self.source!r}, " \
               f"line={self.line!r})"


def _ticket(id, subject, body, fields_json, source, line,  # pylint: disable=redefined-builtin
            batch_outcome=None, origin=None):
    return Ticket(id, subject, body, None, source, line, fields_json=fields_json,
                  batch_outcome=batch_outcome, origin=origin)


@dataclasses.dataclass(frozen=True)
class CallStats:
    """What answering one ticket took: requests, waits, tokens and money.

    One record, nested in :class:`Result` and :class:`DeadLetter` (the files on disk stay flat:
    ``to_dict`` writes the fields each file documents). The LLM step fills it from its
    per-ticket trace; a parse-stage dead letter has the empty one.

    Attributes:
      attempts: Requests sent for the ticket (the repair of a structured answer included).
      retries: Attempts that followed a retryable failure.
      rate_limited: 429 answers.
      server_errors: 5xx answers.
      timeouts: Requests that timed out.
      throttled_secs: Seconds this ticket waited for the rate limiter or a 429's retry-after.
      latency_ms: Latency of the last successful request.
      prompt_tokens: Prompt tokens the provider reported (all answers paid for).
      completion_tokens: Completion tokens the provider reported.
      cost_usd: What those answers cost.
      first_attempt_at: POSIX time of the first request, if any.
      last_attempt_at: POSIX time of the last request, if any.
      batch_answers: Answers the provider's Batch API gave for the ticket (0 or 1; counted in
        ``attempts`` too, one per round it was submitted in).
      batch_discount_usd: What those answers would have cost more online (so the online cost
        of the run is the cost plus the sum of this); not written to the files.
      cache_read_tokens: Prompt tokens the provider read from its prompt cache.
      cache_write_tokens: Prompt tokens the provider wrote to its prompt cache.
      cache_saved_usd: Those tokens' cost as plain input minus their cost (not in the files).
    """
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    throttled_secs: float = 0.0
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    first_attempt_at: Optional[float] = None
    last_attempt_at: Optional[float] = None
    batch_answers: int = 0
    batch_discount_usd: float = 0.0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_saved_usd: float = 0.0
    # --endpoints: (name, requests, rate limited, other errors) per endpoint tried.
    endpoints: Tuple[Tuple[str, int, int, int], ...] = ()


NO_CALLS = CallStats()


@dataclasses.dataclass(frozen=True)
class Result:
    """One successful model answer for one ticket.

    Attributes:
      id: The ticket id.
      response: The answer's text.
      model: The model that answered (the provider's name for it).
      finish_reason: The provider's finish reason.
      started_at: POSIX time the ticket's handling started.
      finished_at: POSIX time it was answered.
      ticket: Every input field.
      request_id: The provider's ``x-request-id`` of the answer.
      cached: Answered from the response store (no request, no cost).
      output: The validated answer, with --response_schema.
      stats: Requests, waits, tokens and cost (see :class:`CallStats`).
      origin: The ticket's :attr:`Ticket.origin` (streaming jobs; written as ``origin``).
      endpoint: With ``--endpoints``: the name of the endpoint that answered.
    """
    id: str
    response: str
    model: str
    finish_reason: Optional[str]
    started_at: float
    finished_at: float
    ticket: Mapping[str, Any]
    request_id: Optional[str] = None
    cached: bool = False
    output: Optional[Mapping[str, Any]] = None
    stats: CallStats = NO_CALLS
    origin: Optional[Mapping[str, Any]] = None
    endpoint: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "id": self.id,
            "response": self.response,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.stats.prompt_tokens,
            "completion_tokens": self.stats.completion_tokens,
            "latency_ms": round(self.stats.latency_ms, 3),
            "attempts": self.stats.attempts,
            "started_at": utc_iso(self.started_at),
            "finished_at": utc_iso(self.finished_at),
            "request_id": self.request_id,
            "cost_usd": round(self.stats.cost_usd, 9),
            "cached": self.cached,
            "ticket": dict(self.ticket),
        }
        if self.output is not None:
            out["output"] = dict(self.output)
        if self.origin is not None:
            out["origin"] = dict(self.origin)
        if self.endpoint is not None:
            out["endpoint"] = self.endpoint
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=False)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that could not be answered, with why.

    Attributes:
      id: The ticket id when it is known, else None.
      stage: Where it failed: ``parse`` or ``llm``.
      reason: A stable, snake_case reason code (see README, "Dead-letter reasons").
      error_class: The class of the error that ended it (ours, not the SDK's).
      http_status: The provider's HTTP status, when there was one.
      message: A short, secret-free description.
      ticket: The parsed input record, when it parsed.
      raw: The raw input (truncated), when it did not parse.
      source: The input file, when known.
      line: The 1-based line or row in that file, when known.
      raw_output: The model's last answer, when it was not valid (reason ``invalid_output``).
      stats: Requests, waits, tokens and the cost of answers paid for but not kept (see
        :class:`CallStats`; empty at the parse stage).
      origin: The record's :attr:`Ticket.origin` (streaming jobs; written as ``origin``).
    """
    id: Optional[str]
    stage: str
    reason: str
    error_class: str
    message: str
    http_status: Optional[int] = None
    ticket: Optional[Mapping[str, Any]] = None
    raw: Optional[str] = None
    source: Optional[str] = None
    line: Optional[int] = None
    raw_output: Optional[str] = None
    stats: CallStats = NO_CALLS
    origin: Optional[Mapping[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "id": self.id,
            "stage": self.stage,
            "reason": self.reason,
            "error_class": self.error_class,
            "http_status": self.http_status,
            "message": self.message,
            "attempts": self.stats.attempts,
            "first_attempt_at": _iso_or_none(self.stats.first_attempt_at),
            "last_attempt_at": _iso_or_none(self.stats.last_attempt_at),
            "source": self.source,
            "line": self.line,
            "cost_usd": round(self.stats.cost_usd, 9),
        }
        if self.ticket is not None:
            out["ticket"] = dict(self.ticket)
        else:
            out["raw"] = self.raw
        if self.raw_output is not None:
            out["raw_output"] = self.raw_output
        if self.origin is not None:
            out["origin"] = dict(self.origin)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def truncate_raw(raw: str) -> str:
    """Keeps at most MAX_RAW_CHARS characters of an input line, marking the cut."""
    if len(raw) <= MAX_RAW_CHARS:
        return raw
    return raw[:MAX_RAW_CHARS] + f"...[truncated {len(raw) - MAX_RAW_CHARS} chars]"
