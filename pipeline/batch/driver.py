"""The batch driver: submit the parts in waves, wait, collect, resubmit what failed, in rounds.

:class:`BatchDriver` runs on the driver (no workers) once the pack pipeline has written round 1's
request files. Each round: every part is uploaded (OpenAI; Anthropic's Message Batches take the
requests in the create call: the client's ``uploads`` says which) and created in WAVES that fit the
enqueued-token limit (:mod:`pipeline.batch.policy`), the running batches are polled every
``--batch_poll_secs`` (one progress line per poll), each finished batch is collected
(:func:`pipeline.batch.files.collect_part`), and the lines that failed retryably become the next
round's parts — until none is left, ``--max_retries`` rounds were made, or
``--batch_deadline_secs`` passed (then running batches are cancelled, what they finished is kept,
and the rest is answered online). A cancelled batch gets ``--batch_cancel_wait_secs`` from its
cancel to end; one still ``cancelling`` then is ABANDONED: its tickets are answered online, and
:meth:`BatchDriver.look_at_abandoned` later counts what it answered anyway (billed twice).

Every step is written to the journal BEFORE it is done and after (:mod:`pipeline.batch.journal`),
so a run killed at any moment is resumed without a ticket being submitted twice: a creation in
doubt is resolved by listing the provider's batches for the part's metadata.

Example::

    driver = BatchDriver(settings, client, journal, events)
    finished = driver.run()        # False: --batch_submit_only returned after submitting
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Callable, Dict, List, Tuple

from pipeline.batch import files as batch_files
from pipeline.batch.journal import TOKEN_LIMIT, JobState, Journal, Part, fold
from pipeline.batch.policy import (cancel_wait_over, effective_limit, learn_limit, may_submit,
                                   next_poll_in, past_deadline)
from transforms import errors
from transforms.llm.providers.openai_batch import BatchInfo
from transforms.logs import event
from transforms.pricing import Price
from transforms.sinks import join_path

_LOG = logging.getLogger("ticketflow")


class BatchJobError(Exception):
    """The batch job cannot go on (the message says why and what to do); exit code 1."""


@dataclasses.dataclass(frozen=True)
class DriverSettings:
    """What the driver needs from the job's configuration.

    Attributes:
      work_dir: ``OUTPUT/batch/JOB``.
      max_rounds: ``--max_retries`` + 1.
      prices: (batch price, online price) of the model.
      cancel_wait_secs: ``--batch_cancel_wait_secs``: how long a batch cancelled at the deadline
        may take to end before its tickets are answered online without it.
    """
    work_dir: str
    max_lines: int
    max_bytes: int
    max_enqueued_tokens: int
    deadline_secs: float
    poll_secs: float
    max_rounds: int
    prices: Tuple[Price, Price]
    submit_only: bool = False
    cancel_wait_secs: float = 600.0


#: Part states a round is done with (an abandoned part's tickets are answered online).
_SETTLED = ("collected", "skipped", "abandoned")


def round_dir(work_dir: str, round_no: int) -> str:
    return join_path(work_dir, f"round-{round_no}")


class BatchDriver:
    """Rounds of waves of batches, journaled.

    Args:
      settings: The job's batch settings.
      client: The provider's batch client: :class:`~transforms.llm.providers.openai_batch.
        BatchClient` (its docstring lists what the driver asks of one) or :class:`~transforms.
        llm.providers.anthropic_batch.AnthropicBatchClient`.
      journal: The job's journal.
      events: The journal's events so far (the job's "job" and "packed" events included).
      wall: Wall clock (the deadline, progress).
      sleep: Blocking sleep between polls.
    """

    def __init__(self, settings: DriverSettings, client, journal: Journal, events: List[Dict],
                 *, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self._s = settings
        self._client = client
        self._journal = journal
        self._events = list(events)
        self.state: JobState = fold(self._events)
        self._wall = wall
        self._sleep = sleep
        self._seen: Dict[str, BatchInfo] = {}

    def _log(self, name: str, **fields) -> None:
        self._events.append(self._journal.append(name, job=self.state.job, **fields))
        self.state = fold(self._events)

    def _late(self) -> bool:
        return past_deadline(self.state.started_at, self._s.deadline_secs, self._wall())

    # ---- the rounds ---------------------------------------------------------------------------

    def run(self) -> bool:
        """Drives the job until every part of every round is collected.

        Returns:
          True when done; False when ``submit_only`` returned after the first submissions.
        """
        while True:
            round_no = self.state.round
            if not self._drive_round(round_no):
                return False
            retry = batch_files.read_ids(
                [join_path(round_dir(self._s.work_dir, round_no), f"retry-{p.name}.txt")
                 for p in self.state.round_parts(round_no) if p.state == "collected"])
            if not retry:
                break
            if self._late():
                self._log("retries_dropped", round=round_no, count=len(retry))
                break
            writer = batch_files.PartWriter(
                join_path(round_dir(self._s.work_dir, round_no + 1), "requests"),
                self._s.max_lines, self._s.max_bytes, self._limit())
            parts = batch_files.copy_lines(self.state.round_parts(round_no), retry, writer)
            event(_LOG, logging.INFO, "batch_round", round=round_no + 1, requests=len(retry))
            self._log("packed", round=round_no + 1, parts=parts)
        self._log("collected_all")
        return True

    def _drive_round(self, round_no: int) -> bool:
        while True:
            late = self._late()
            if late:
                self._stop_round(round_no)
            else:
                self._submit(round_no)
                if self._s.submit_only:
                    return False
            self._poll(round_no)
            if late:
                self._abandon(round_no)
            self._collect(round_no, late)
            parts = self.state.round_parts(round_no)
            if all(p.state in _SETTLED for p in parts):
                return True
            self._progress(round_no, parts)
            self._sleep(self._pause(parts))

    def _pause(self, parts: List[Part]) -> float:
        """Until the next poll: ``--batch_poll_secs``, or less to act on the deadline and on the
        end of each cancel wait when they come."""
        due = [p.cancelling_at + self._s.cancel_wait_secs for p in parts
               if p.running and p.cancelling]
        if self._s.deadline_secs:
            due.append(self.state.started_at + self._s.deadline_secs)
        return next_poll_in(self._wall(), self._s.poll_secs, due)

    # ---- submitting in waves ------------------------------------------------------------------

    def _limit(self) -> int:
        return effective_limit(self._s.max_enqueued_tokens, self.state.learnt_limit)

    def _submit(self, round_no: int) -> None:
        limit = self._limit()
        for part in self.state.round_parts(round_no):
            if part.state == "creating":
                # In doubt (a crash or an error during the create): it may exist. Settle it first.
                self._create(part)
                continue
            if part.state not in ("packed", "uploading", "uploaded"):
                continue
            if limit and part.tokens > limit and part.lines > 1:
                self._split(part, limit)
                return self._submit(round_no)
            enqueued = sum(p.tokens for p in self.state.round_parts(round_no) if p.running)
            if not may_submit(part.tokens, enqueued, limit):
                return  # waves keep the parts' order: the next one waits for room
            if enqueued == 0 and part.lonely_token_failures > self._s.max_rounds:
                event(_LOG, logging.WARNING, "batch_part_skipped", part=part.name,
                      tokens=part.tokens, why="token_limit_exceeded with nothing of ours running")
                self._log("skipped", round=part.round, part=part.name)
                continue
            if self._client.uploads and part.state != "uploaded":
                self._upload(part)
            self._create(self.state.parts[part.key])

    def _split(self, part: Part, limit: int) -> None:
        writer = batch_files.PartWriter(part.path[:-len(".jsonl")] + ".split", self._s.max_lines,
                                        self._s.max_bytes, limit)
        into = batch_files.copy_lines([part], None, writer)
        event(_LOG, logging.INFO, "batch_part_split", part=part.name, tokens=part.tokens,
              limit=limit, into=len(into))
        self._log("split", round=part.round, part=part.name, into=into)

    def _upload(self, part: Part) -> None:
        self._log("uploading", round=part.round, part=part.name)
        event(_LOG, logging.INFO, "batch_uploading", round=part.round, part=part.name,
              requests=part.lines)
        file_id = self._client.upload(part.path, f"ticketflow-{part.name}.jsonl")
        self._log("uploaded", round=part.round, part=part.name, file_id=file_id)

    def _metadata(self, part: Part) -> Dict[str, str]:
        return {"ticketflow_job": str(self.state.job), "ticketflow_part": part.name,
                "ticketflow_round": str(part.round), "ticketflow_attempt": str(part.attempt)}

    def _settle(self, part: Part) -> bool:
        """Looks for the batch of a creation in doubt by listing; True when found."""
        claimed = {p.batch_id for p in self.state.parts.values() if p.batch_id}
        found = self._client.find(self._metadata(part), part.creating_at, lines=part.lines,
                                  claimed=claimed)
        if found is None:
            return False
        event(_LOG, logging.INFO, "batch_found", part=part.name, batch_id=found.id)
        self._log("created", round=part.round, part=part.name, batch_id=found.id, found=True)
        return True

    def _create(self, part: Part) -> None:
        metadata = self._metadata(part)
        if part.state == "creating" and self._settle(part):
            return
        running = any(p.running for p in self.state.round_parts(part.round))
        if not running and part.lonely_token_failures > self._s.max_rounds:
            # Refused again and again with nothing of ours in the queue: it never fits.
            event(_LOG, logging.WARNING, "batch_part_skipped", part=part.name,
                  tokens=part.tokens, why="the provider refused its creation with nothing of "
                  "ours running")
            self._log("skipped", round=part.round, part=part.name)
            return
        self._log("creating", round=part.round, part=part.name, attempt=part.attempt,
                  file_id=part.file_id)
        event(_LOG, logging.INFO, "batch_creating", round=part.round, part=part.name,
              attempt=part.attempt)
        try:
            # Without an upload step (Anthropic), the part's requests go in the create call.
            source = part.file_id if self._client.uploads else part.path
            info = self._client.create(source, metadata)
        except errors.RetryableError as exc:
            # It may exist anyway: the next pass looks for it before creating again.
            event(_LOG, logging.WARNING, "batch_create_failed", part=part.name,
                  error=type(exc).__name__, message=exc.message[:200])
            # Anthropic refuses a create over its queue limit (429): with nothing of ours
            # running, a part refused more than --max_retries + 1 times goes online.
            self._log("create_failed", round=part.round, part=part.name,
                      error=type(exc).__name__, alone=not running)
            return
        except errors.ProviderError as exc:
            raise BatchJobError(f"the provider refused to create a batch of {part.path}: "
                                f"{exc.message[:300]}") from None
        self._log("created", round=part.round, part=part.name, batch_id=info.id)

    # ---- waiting, cancelling, collecting ------------------------------------------------------

    def _poll(self, round_no: int) -> None:
        for part in self.state.round_parts(round_no):
            if not part.running:
                continue
            info = self._client.retrieve(part.batch_id)
            self._seen[info.id] = info
            if not info.terminal:
                continue
            code, message = info.errors[0] if info.errors else (None, "")
            fields = {"status": info.status, "batch_id": info.id, "code": code,
                      "output_file_id": info.output_file_id,
                      "error_file_id": info.error_file_id}
            if info.status == "failed" and code == TOKEN_LIMIT:
                others = sum(p.tokens for p in self.state.round_parts(round_no)
                             if p.running and p is not part)
                fields.update(learnt_limit=learn_limit(message, others, part.tokens),
                              alone=others == 0)
                event(_LOG, logging.INFO, "batch_token_limit", part=part.name,
                      learnt_limit=fields["learnt_limit"], running_tokens=others)
            elif info.status == "failed":
                event(_LOG, logging.WARNING, "batch_failed", part=part.name, code=code,
                      message=message[:300], note="its requests are answered online")
            self._log("ended", round=part.round, part=part.name, **fields)

    def _stop_round(self, round_no: int) -> None:
        """The deadline passed: cancel what runs, submit nothing more."""
        for part in self.state.round_parts(round_no):
            if part.state == "creating" and not self._settle(part):
                self._log("skipped", round=part.round, part=part.name)
                continue
            part = self.state.parts[part.key]
            if part.running and not part.cancelling:
                self._log("cancelling", round=part.round, part=part.name,
                          batch_id=part.batch_id)
                event(_LOG, logging.INFO, "batch_cancelling", part=part.name,
                      batch_id=part.batch_id, why="--batch_deadline_secs passed")
                self._client.cancel(part.batch_id)
            elif part.state in ("packed", "uploading", "uploaded"):
                self._log("skipped", round=part.round, part=part.name)

    def _abandon(self, round_no: int) -> None:
        """Stops waiting for the cancelled batches whose ``--batch_cancel_wait_secs`` is over."""
        now = self._wall()
        for part in self.state.round_parts(round_no):
            if part.running and part.cancelling and cancel_wait_over(
                    part.cancelling_at, self._s.cancel_wait_secs, now):
                info = self._seen.get(part.batch_id)
                event(_LOG, logging.INFO, "batch_cancel_abandoned", part=part.name,
                      batch_id=part.batch_id, status=info.status if info else None,
                      waited_secs=round(now - part.cancelling_at, 1), requests=part.lines,
                      why="--batch_cancel_wait_secs passed: its requests are answered online")
                self._log("cancel_abandoned", round=part.round, part=part.name,
                          batch_id=part.batch_id)

    def look_at_abandoned(self) -> None:
        """Looks once more at the abandoned batches: one that ended since has its output
        downloaded (``late-output-PART.jsonl``, never read by the collect pipeline) and the lines
        it answered counted: those were billed by both the Batch API and the online path."""
        for part in self.state.parts.values():
            if part.state != "abandoned" or part.late_status:
                continue
            info = self._client.retrieve(part.batch_id)
            if not info.terminal:
                continue
            answered = 0
            if info.output_file_id:
                local = join_path(round_dir(self._s.work_dir, part.round),
                                  f"late-output-{part.name}.jsonl")
                answered = batch_files.answered_lines(self._client, info.output_file_id, local)
            event(_LOG, logging.INFO, "batch_abandoned_ended", part=part.name,
                  batch_id=part.batch_id, status=info.status, answered_twice=answered)
            self._log("abandoned_ended", round=part.round, part=part.name,
                      batch_id=part.batch_id, status=info.status, answered=answered)

    def _collect(self, round_no: int, late: bool) -> None:
        for part in self.state.round_parts(round_no):
            if part.state != "ended":
                continue
            event(_LOG, logging.INFO, "batch_collecting", round=part.round, part=part.name,
                  batch_id=part.batch_id, status=part.status)
            counts = batch_files.collect_part(part, self._client,
                                              round_dir(self._s.work_dir, part.round),
                                              self._s.prices, self._s.max_rounds, late)
            self._log("collected", round=part.round, part=part.name, counts=counts)

    def _progress(self, round_no: int, parts: List[Part]) -> None:
        statuses = collections.Counter(
            (self._seen[p.batch_id].status if p.batch_id in self._seen else p.state)
            for p in parts)
        running = [self._seen[p.batch_id] for p in parts
                   if p.running and p.batch_id in self._seen]
        done = sum(i.completed + i.failed for i in running)
        fields = {"round": round_no, "batches": len(parts),
                  "statuses": dict(sorted(statuses.items())),
                  "requests_done": done, "requests_running": sum(p.lines for p in parts
                                                                 if p.running),
                  "elapsed_secs": round(self._wall() - self.state.started_at, 1)}
        if self._s.deadline_secs:
            fields["deadline_in_secs"] = round(
                self.state.started_at + self._s.deadline_secs - self._wall(), 1)
        event(_LOG, logging.INFO, "batch_progress", **fields)
