"""Validation: raw records → :class:`~transforms.records.Ticket`, or a dead letter with a reason.

Nothing in the input can crash the pipeline: every way a record can be wrong has a stable reason
code, and the dead letter keeps the raw input (truncated), the file and the line.

Reason codes (stage ``parse``): ``invalid_encoding``, ``invalid_json``, ``not_an_object``,
``missing_id``, ``invalid_id``, ``missing_text``, ``invalid_text``, ``empty_text``,
``text_too_long``, ``duplicate_id``; with ``--replay``, ``not_a_dead_letter``.

In a chunked run (``pipeline/chunks.py``) the chunks are consecutive slices of the input in
(file, line) order, so a record is a duplicate iff its id was kept by an earlier chunk or comes
later in its own chunk: ``known`` (:class:`~transforms.idset.KnownIds`) names the hashes of the
ids the earlier chunks kept (``duplicate_id``) and of those earlier runs answered (``--resume``,
``already_done``), checked record by record before the shuffle by id.

With ``replay``, the input is dead-letter files: the ``ticket`` of each dead letter whose reason is
replayable is validated again; the others are skipped and counted (``replay_skipped``).

Example::

    checked = raw | "Validate" >> ValidateTickets(FieldMapping(id_field="ticket_id"))
    checked["tickets"], checked["dead_letter"]
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import apache_beam as beam

from transforms.idset import KnownIds
from transforms.metrics import TicketflowMetrics
from transforms.read import RawRecord
from transforms.records import DEAD_LETTER_TAG, STAGE_PARSE, DeadLetter, Ticket, truncate_raw

# Every reason a parse-stage dead letter may carry.
PARSE_REASONS = frozenset({"invalid_encoding", "invalid_json", "not_an_object", "missing_id",
                           "invalid_id", "missing_text", "invalid_text", "empty_text",
                           "text_too_long", "duplicate_id", "not_a_dead_letter"})

# Dead-letter reasons worth another try: transient failures, the budget, an interrupted run.
REPLAYABLE_REASONS = frozenset({"retries_exhausted", "deadline_exceeded", "budget_exhausted",
                                "daily_limit", "interrupted", "internal_error", "rate_limited",
                                "server_error", "timeout", "connection_error", "malformed_response",
                                "provider_unavailable"})


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """Which input fields hold the id, the text and the subject, and the size limit."""
    id_field: str = "id"
    text_field: str = "body"
    subject_field: str = "subject"
    max_input_chars: int = 20000


class InvalidRecord(Exception):
    """A record that cannot become a Ticket; ``reason`` is the dead-letter code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _ticket_id(record: dict, field: str) -> str:
    if field not in record or record[field] is None or record[field] == "":
        raise InvalidRecord("missing_id", f"the record has no {field!r} field")
    value = record[field]
    if isinstance(value, bool):
        raise InvalidRecord("invalid_id", f"{field!r} must be a string or an integer, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRecord("missing_id", f"{field!r} is blank")
        return value.strip()
    raise InvalidRecord("invalid_id",
                        f"{field!r} must be a string or an integer, not {type(value).__name__}")


def parse_ticket(raw: RawRecord, mapping: FieldMapping) -> Ticket:
    """Validates one raw record.

    Raises:
      InvalidRecord: with a reason code, when the record cannot be processed.
    """
    if raw.decode_error:
        raise InvalidRecord("invalid_encoding", f"line is {raw.decode_error}")
    record = raw.value
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except (ValueError, RecursionError) as exc:
            raise InvalidRecord("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidRecord("not_an_object",
                            f"expected a JSON object, got {type(record).__name__}")
    ticket_id = _ticket_id(record, mapping.id_field)
    if mapping.text_field not in record or record[mapping.text_field] is None:
        raise InvalidRecord("missing_text", f"the record has no {mapping.text_field!r} field")
    text = record[mapping.text_field]
    if not isinstance(text, str):
        raise InvalidRecord("invalid_text",
                            f"{mapping.text_field!r} must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InvalidRecord("empty_text", f"{mapping.text_field!r} is empty")
    if len(text) > mapping.max_input_chars:
        raise InvalidRecord(
            "text_too_long", f"{mapping.text_field!r} has {len(text)} characters, more than "
            f"--max_input_chars={mapping.max_input_chars}")
    subject = record.get(mapping.subject_field)
    subject = "" if subject is None else str(subject).strip()
    return Ticket(id=ticket_id, subject=subject, body=text.strip(), fields=record,
                  source=raw.source, line=raw.line, origin=raw.origin)


def record_order(source: Optional[str], line: Optional[int]) -> tuple:
    """The duplicate-id rule: of several records with one id, the smallest of this is kept
    (the first by file name, then by line)."""
    return (source or "", line or 0)


def _id_hint(raw: RawRecord, mapping: FieldMapping) -> Optional[str]:
    """Best-effort id for a dead letter of a record that did not validate."""
    value = raw.value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, dict):
        found = value.get(mapping.id_field)
        if isinstance(found, (str, int)) and not isinstance(found, bool):
            return str(found)
    return None


def unwrap_dead_letter(raw: RawRecord, replayable=REPLAYABLE_REASONS) -> Optional[RawRecord]:
    """For ``--replay``: the ticket inside a dead-letter line, or None to skip it.

    Raises:
      InvalidRecord: when the line is not a dead letter at all.
    """
    if raw.decode_error:
        raise InvalidRecord("invalid_encoding", f"line is {raw.decode_error}")
    try:
        record = json.loads(raw.value) if isinstance(raw.value, str) else raw.value
    except (ValueError, RecursionError) as exc:
        raise InvalidRecord("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict) or "reason" not in record or "stage" not in record:
        raise InvalidRecord("not_a_dead_letter",
                            "--replay reads dead-letter files: this record has no stage/reason")
    if record["reason"] not in replayable or not isinstance(record.get("ticket"), dict):
        return None
    return RawRecord(record.get("source") or raw.source, record.get("line") or raw.line,
                     record["ticket"])


class _ParseFn(beam.DoFn):
    """Validates each record; with ``keyed``, emits ``(id, raw record)`` for de-duplication.

    Why the raw record and not the Ticket: Beam's local runner holds every element of a shuffle
    in memory as a Python object, and the next stage's input fills while this one is read, so the
    shuffle by id must carry as little as possible. The records kept after it are parsed again
    (the same check, so they pass).

    With ``known`` (a chunked run), a ticket whose id an earlier run answered is dropped
    (``already_done``) and one whose id an earlier chunk kept is a ``duplicate_id`` dead letter.
    """

    def __init__(self, mapping: FieldMapping, replay: bool = False, keyed: bool = False,
                 known: Optional[KnownIds] = None):
        self._mapping = mapping
        self._replay = replay
        self._keyed = keyed
        self._known = known

    def setup(self):
        self._metrics = TicketflowMetrics()
        self._sets = self._known.open() if self._known is not None else None

    def process(self, raw: RawRecord):
        try:
            if self._replay:
                unwrapped = unwrap_dead_letter(raw)
                if unwrapped is None:
                    self._metrics.inc("replay_skipped")
                    return
                raw = unwrapped
            ticket = parse_ticket(raw, self._mapping)
            if self._sets is not None:
                if ticket.id in self._sets.done:
                    self._metrics.inc("already_done")
                    return
                if ticket.id in self._sets.earlier:
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, self._earlier_duplicate(ticket))
                    return
            if self._keyed:
                yield ticket.id, (raw.source, raw.line, raw.value)
            else:
                yield ticket
        except InvalidRecord as exc:
            self._metrics.inc("parse_errors")
            raw_text = raw.value if isinstance(raw.value, str) else json.dumps(raw.value)
            dead = DeadLetter(
                id=_id_hint(raw, self._mapping), stage=STAGE_PARSE, reason=exc.reason,
                error_class="InvalidRecord", message=exc.message, raw=truncate_raw(raw_text),
                source=raw.source, line=raw.line, origin=raw.origin)
            self._metrics.record_dead_letter(dead)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead)

    def _earlier_duplicate(self, ticket: Ticket) -> DeadLetter:
        self._metrics.inc("duplicates")
        dead = DeadLetter(
            id=ticket.id, stage=STAGE_PARSE, reason="duplicate_id", error_class="DuplicateId",
            message=f"id {ticket.id!r} already seen in an earlier chunk of the input",
            ticket=ticket.fields, source=ticket.source, line=ticket.line)
        self._metrics.record_dead_letter(dead)
        return dead


class _KeepFirstFn(beam.DoFn):
    """Keeps the first ticket of an id (by file, then line); the rest are ``duplicate_id``.

    Ids already answered by an earlier run (``--resume``) are dropped and counted ``already_done``.
    The grouped values are raw records (see :class:`_ParseFn`), parsed again here.
    """

    def __init__(self, mapping: FieldMapping):
        self._mapping = mapping

    def setup(self):
        self._metrics = TicketflowMetrics()

    def process(self, element):
        ticket_id, grouped = element
        raws = list(grouped["tickets"])
        if not raws:
            return
        if any(True for _ in grouped["done"]):
            self._metrics.inc("already_done", len(raws))
            return
        raws.sort(key=lambda r: record_order(r[0], r[1]))
        tickets = [parse_ticket(RawRecord(*raw), self._mapping) for raw in raws]
        first = tickets[0]
        yield first
        for dup in tickets[1:]:
            self._metrics.inc("duplicates")
            where = f"{first.source}:{first.line}" if first.source else "an earlier record"
            dead = DeadLetter(
                id=ticket_id, stage=STAGE_PARSE, reason="duplicate_id",
                error_class="DuplicateId", message=f"id {ticket_id!r} already seen at {where}",
                ticket=dup.fields, source=dup.source, line=dup.line)
            self._metrics.record_dead_letter(dead)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead)


class ValidateTickets(beam.PTransform):
    """Parses and validates raw records and drops duplicate ids.

    Output: a dict of PCollections, ``tickets`` and ``dead_letter``.

    Args:
      mapping: Field names and the size limit.
      dedupe: Whether duplicate ids become dead letters (one shuffle by id).
      done_ids: Ids answered by earlier runs, dropped as ``already_done`` (needs dedupe).
      replay: Whether the input is dead-letter files to replay.
      known: A chunked run's ids of earlier runs and earlier chunks (see module docstring).
    """

    def __init__(self, mapping: FieldMapping, dedupe: bool = True, done_ids=None,
                 replay: bool = False, known: Optional[KnownIds] = None):
        super().__init__()
        self._mapping = mapping
        self._dedupe = dedupe
        self._done_ids = done_ids
        self._replay = replay
        self._known = known

    def expand(self, raw):
        parsed = raw | "ParseTickets" >> beam.ParDo(
            _ParseFn(self._mapping, self._replay, keyed=self._dedupe,
                     known=self._known)).with_outputs(
                DEAD_LETTER_TAG, main="tickets")
        if not self._dedupe:
            return {"tickets": parsed.tickets, DEAD_LETTER_TAG: parsed[DEAD_LETTER_TAG]}
        keyed = parsed.tickets
        done = self._done_ids
        if done is None:
            done = raw.pipeline | "NoDoneIds" >> beam.Create([])
        done_keyed = done | "KeyDoneIds" >> beam.Map(lambda i: (i, True))
        deduped = (
            {"tickets": keyed, "done": done_keyed}
            | "GroupById" >> beam.CoGroupByKey()
            | "KeepFirstOfEachId" >> beam.ParDo(_KeepFirstFn(self._mapping)).with_outputs(
                DEAD_LETTER_TAG, main="tickets"))
        dead = ((parsed[DEAD_LETTER_TAG], deduped[DEAD_LETTER_TAG])
                | "MergeParseDeadLetters" >> beam.Flatten())
        return {"tickets": deduped.tickets, DEAD_LETTER_TAG: dead}
