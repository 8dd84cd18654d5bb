"""The batch job's journal: what the driver is about to do and has done, one small file per event.

Pay once, even across crashes: before the driver creates anything at the provider (a file, a
batch) it writes down that it is about to, and after, what it got. A run killed at any moment is
resumed (``--resume``) by reading the journal back (:func:`fold`): a part "uploading" but not
"uploaded" is uploaded again (an unused upload costs nothing); a part "creating" but not
"created" is looked for by LISTING the provider's batches for its metadata before anything is
created again; a batch "created" is polled; one "ended" but not "collected" is collected again
(its files are still at the provider); one "cancelling" keeps the time of its cancel, so its
``--batch_cancel_wait_secs`` is not counted again from zero, and one "cancel_abandoned" stays
abandoned (its tickets are answered online).

Layout: ``OUTPUT/batch/journal/NNNNNN.json``, one JSON object per event, written once and never
changed, so it works the same on a local disk and on ``gs://`` (Beam FileSystems, no appends).
A file cut short by a crash while it was being written is skipped (its action had not started).

Example::

    journal = Journal("out/run1")
    state = fold(journal.read())
    journal.append("uploading", job=state.job, round=1, part="requests-00000-of-00001")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms.logs import event
from transforms.sinks import join_path

_LOG = logging.getLogger("ticketflow")

JOURNAL_DIR = "batch/journal"
TOKEN_LIMIT = "token_limit_exceeded"


class Journal:
    """Reads and appends the events under ``OUTPUT/batch/journal`` (one writer: the driver).

    Args:
      output: The run's ``--output`` prefix.
      wall: Wall clock (each event's ``at``).
    """

    def __init__(self, output: str, wall: Callable[[], float] = time.time):
        self.dir = join_path(output, JOURNAL_DIR)
        self._wall = wall
        self._next = 1

    def read(self) -> List[Dict[str, Any]]:
        """Every readable event, in order (and where the next one goes)."""
        metas = FileSystems.match([join_path(self.dir, "*.json")])[0].metadata_list
        events = []
        for meta in sorted(metas, key=lambda m: m.path):
            name = meta.path.rsplit("/", 1)[-1][:-len(".json")]
            if name.isdigit():
                self._next = max(self._next, int(name) + 1)
            try:
                with FileSystems.open(meta.path) as handle:
                    record = json.loads(handle.read().decode("utf-8"))
            except (ValueError, OSError):
                event(_LOG, logging.WARNING, "batch_journal_skipped", path=meta.path)
                continue
            if isinstance(record, dict) and "event" in record:
                events.append(record)
        return events

    def append(self, name: str, **fields: Any) -> Dict[str, Any]:
        """Writes one event durably (it is on disk, or in the bucket, when this returns)."""
        record = {"event": name, "at": self._wall(), **fields}
        path = join_path(self.dir, f"{self._next:06d}.json")
        self._next += 1
        with FileSystems.create(path, mime_type="application/json") as handle:
            handle.write(json.dumps(record, separators=(",", ":")).encode("utf-8"))
        return record


@dataclasses.dataclass
class Part:
    """One request file of one round, and what happened to it.

    Attributes:
      state: ``packed``, ``uploading``, ``uploaded``, ``creating``, ``created``, ``ended``,
        ``collected``, ``skipped`` (never submitted: its tickets are answered online),
        ``abandoned`` (cancelled at the deadline and not ended within ``--batch_cancel_wait_secs``:
        its tickets are answered online, and what it still answers may be billed twice) or
        ``split`` (replaced by smaller parts).
      cancelling_at: When the deadline's cancel was asked (the journal's time).
      late_status: The final status of an abandoned batch, if the driver saw it end later.
      late_answered: How many lines that final output answered (billed by the Batch API too).
      lonely_token_failures: How often the provider refused it for room (OpenAI's
        ``token_limit_exceeded``, or a create that failed retryably) with nothing of ours
        running; past ``--max_retries`` + 1 it is skipped (answered online).
    """
    round: int
    name: str
    path: str
    lines: int
    tokens: int
    state: str = "packed"
    file_id: Optional[str] = None
    attempt: int = 1
    creating_at: float = 0.0
    batch_id: Optional[str] = None
    status: Optional[str] = None
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    failed_code: Optional[str] = None
    cancelling: bool = False
    cancelling_at: float = 0.0
    late_status: Optional[str] = None
    late_answered: int = 0
    lonely_token_failures: int = 0
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def running(self) -> bool:
        """Created at the provider and not yet seen ended."""
        return self.state == "created"

    @property
    def key(self) -> Tuple[int, str]:
        return self.round, self.name


@dataclasses.dataclass
class JobState:
    """A batch job as the journal tells it (see :func:`fold`)."""
    job: Optional[str] = None
    fingerprint: Optional[str] = None
    started_at: float = 0.0
    parts: Dict[Tuple[int, str], Part] = dataclasses.field(default_factory=dict)
    packed_rounds: List[int] = dataclasses.field(default_factory=list)
    learnt_limit: int = 0
    batches_created: int = 0
    batches_found: int = 0
    batches_cancelled: int = 0
    batches_failed: int = 0
    token_limit_waits: int = 0
    collected_all: bool = False
    finished: bool = False

    @property
    def open(self) -> bool:
        """A job that was started and whose collect pipeline has not finished."""
        return self.job is not None and not self.finished

    @property
    def round(self) -> int:
        return max(self.packed_rounds) if self.packed_rounds else 0

    def round_parts(self, round_no: int) -> List[Part]:
        """The live parts of a round (split ones replaced by theirs), in name order."""
        return sorted((p for p in self.parts.values()
                       if p.round == round_no and p.state != "split"), key=lambda p: p.name)

    def figures(self) -> Dict[str, Any]:
        """The summary's batch figures."""
        parts = [p for p in self.parts.values() if p.state != "split"]
        abandoned = sorted((p for p in parts if p.state == "abandoned"), key=lambda p: p.key)
        return {
            "job": self.job,
            "batches_created": self.batches_created,
            "batches_found_by_listing": self.batches_found,
            "batches_cancelled": self.batches_cancelled,
            "batches_failed": self.batches_failed,
            "token_limit_waits": self.token_limit_waits,
            "rounds": max((p.round for p in parts if p.batch_id), default=0),
            "requests_submitted": sum(p.lines for p in parts if p.batch_id),
            "answered_online_after_batch": sum(p.counts.get("leftover", 0) for p in parts)
            + sum(p.lines for p in parts if p.state in ("skipped", "abandoned")),
            "requests_exhausted": sum(p.counts.get("exhausted", 0) for p in parts),
            # Batches given up while cancelling: their requests went online, and whatever they
            # still answer is billed by the Batch API too (docs/batch.md, "The deadline").
            "batches_abandoned": len(abandoned),
            "abandoned_batch_ids": [p.batch_id for p in abandoned],
            "may_be_billed_twice": sum(p.lines for p in abandoned),
            "abandoned_seen_ended": sum(1 for p in abandoned if p.late_status),
            "billed_twice": sum(p.late_answered for p in abandoned),
        }


def _part(state: JobState, e: Dict[str, Any]) -> Optional[Part]:
    return state.parts.get((int(e.get("round", 0)), str(e.get("part"))))


def _new_parts(state: JobState, round_no: int, parts: List[Dict[str, Any]]) -> None:
    for p in parts:
        part = Part(round_no, p["part"], p["path"], int(p["lines"]), int(p["tokens"]))
        state.parts[part.key] = part


def _on_ended(state: JobState, part: Part, e: Dict[str, Any]) -> None:
    part.status = e.get("status")
    part.output_file_id = e.get("output_file_id")
    part.error_file_id = e.get("error_file_id")
    code = e.get("code")
    if part.status == "failed" and code == TOKEN_LIMIT:
        # Not a failure: the provider's queue was full. Wait, then create it again.
        state.token_limit_waits += 1
        state.learnt_limit = int(e.get("learnt_limit") or state.learnt_limit)
        part.lonely_token_failures += 1 if e.get("alone") else 0
        part.state, part.attempt, part.batch_id = "uploaded", part.attempt + 1, None
        return
    if part.status == "failed":
        state.batches_failed += 1
        part.failed_code = code
    part.state = "ended"


def fold(events: List[Dict[str, Any]]) -> JobState:
    """The latest job's state from the journal's events (pure; tested without I/O)."""
    state = JobState()
    for e in events:
        kind = e["event"]
        if kind == "job":
            state = JobState(job=e["job"], fingerprint=e.get("fingerprint"),
                             started_at=float(e.get("at") or 0.0))
            continue
        if e.get("job") != state.job:
            continue
        if kind == "abandoned":
            state.finished = True
        elif kind == "packed":
            round_no = int(e["round"])
            state.packed_rounds.append(round_no)
            _new_parts(state, round_no, e.get("parts") or [])
        elif kind == "collected_all":
            state.collected_all = True
        elif kind == "finished":
            state.finished = True
        elif kind == "learnt_limit":
            state.learnt_limit = int(e.get("limit") or 0)
        else:
            part = _part(state, e)
            if part is None:
                continue
            _apply(state, part, kind, e)
    return state


def _apply(state: JobState, part: Part, kind: str, e: Dict[str, Any]) -> None:
    if kind == "split":
        part.state = "split"
        _new_parts(state, part.round, e.get("into") or [])
    elif kind == "uploading":
        part.state = "uploading"
    elif kind == "uploaded":
        part.state, part.file_id = "uploaded", e["file_id"]
    elif kind == "creating":
        part.state, part.attempt = "creating", int(e.get("attempt") or part.attempt)
        part.creating_at = float(e.get("at") or 0.0)
    elif kind == "create_failed":  # a retryable error: it stays "creating" (in doubt)
        part.lonely_token_failures += 1 if e.get("alone") else 0
    elif kind == "created":
        part.state, part.batch_id = "created", e["batch_id"]
        state.batches_created += 1
        state.batches_found += 1 if e.get("found") else 0
    elif kind == "cancelling":
        if not part.cancelling:
            state.batches_cancelled += 1
            part.cancelling_at = float(e.get("at") or 0.0)
        part.cancelling = True
    elif kind == "cancel_abandoned":
        part.state = "abandoned"
    elif kind == "abandoned_ended":
        part.late_status = e.get("status")
        part.late_answered = int(e.get("answered") or 0)
    elif kind == "ended":
        _on_ended(state, part, e)
    elif kind == "collected":
        part.state = "collected"
        part.counts = {k: int(v) for k, v in (e.get("counts") or {}).items()}
    elif kind == "skipped":
        part.state = "skipped"
