"""The simulator's Batch API: uploaded files and batches, progressing on the simulator's clock.

A batch lives ``--batch_secs`` S: ``validating`` for the first 10% of S, ``in_progress`` until 90%
(its lines finishing at an even pace, in a seeded shuffled order), ``finalizing``, then
``completed`` at S. Or ``failed`` when validation ends; ``expired`` at S with only part of its
lines done (``--batch_expire_fraction``); ``cancelling`` from a cancel for 10% of S but at most
10 minutes (OpenAI's documented bound), then ``cancelled``. Nothing runs in the background: a
batch's status is a pure function of the clock, and its lines are answered lazily, by whichever
request next looks at the batch, through the same code as the online endpoint, so that batch and
online answers to a request are the same.

    store = BatchStore(config, answer=simulator.answer, stats=stats, clock=clock)
    upload = store.files.upload(jsonl_bytes, "requests.jsonl", "batch")
    batch = store.create({"input_file_id": upload["id"], "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"})
    store.retrieve(batch["id"])["status"]          # "validating", ..., "completed"
    store.files.get(store.retrieve(batch["id"])["output_file_id"]).data   # output JSONL

Output lines are ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}``: status 200 lines go to the output file, the others (a 400 for a body the chat
endpoint refuses, a 500 from ``--batch_p_line_fail``) to the error file, as OpenAI does. Lines a
batch never ran go to the error file with ``"response": null`` and ``error.code``
``batch_expired`` or ``batch_cancelled``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from simulator import anthropic_batch, gemini_batch
from simulator.batch_files import BatchApiError, FileStore, page
from simulator.batch_input import InputLine, batch_error, parse_input
from simulator.config import SimulatorConfig
from simulator.stats import Stats

#: The one endpoint and completion window the simulator's batches accept.
ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
#: Statuses whose batches still count against ``--batch_max_enqueued_tokens``.
ENQUEUED = frozenset({"validating", "in_progress", "finalizing"})
CANCELLABLE = frozenset({"validating", "in_progress"})

_VALIDATING = 0.1  # share of --batch_secs spent validating
_FINALIZING = 0.1  # share spent finalizing; also how long cancelling lasts...
_CANCEL_MAX_SECS = 600.0  # ...but at most this: OpenAI says a cancel takes up to 10 minutes
_DAY = 86_400
# The body of the online endpoint's 500, which a line failed by --batch_p_line_fail carries.
_LINE_FAILURE = {"error": {"message": "The server had an error while processing your request. "
                                      "Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}
_UNRUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion "
                                 "window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was "
                                     "cancelled."),
}

#: answer(body, created) -> (HTTP status, response body): the online endpoint's answer.
Answer = Callable[[dict[str, Any], int], tuple[int, dict[str, Any]]]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass(eq=False)
class _Batch:
    """One batch: what was asked, its schedule (monotonic seconds) and what it produced."""

    id: str
    seq: int
    input_file_id: str
    metadata: dict[str, str] | None
    model: str | None
    lines: tuple[InputLine, ...]
    errors: tuple[dict[str, Any], ...]  # non-empty: the batch fails validation
    tokens: int
    t0: float  # created
    wall0: float  # epoch seconds at t0
    t_valid: float  # validation ends
    t_fin: float  # every line done; finalizing starts
    t_end: float  # completed or expired
    cancel_secs: float
    order: list[int]  # processing order: indices into lines
    failing: frozenset[int]  # lines answered 500
    keep: int  # lines done before the batch expires (all of them unless it expires)
    expiring: bool
    total: int = 0
    cancel_at: float | None = None
    answered: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    outputs: list[bytes] = dataclasses.field(default_factory=list)
    error_lines: list[bytes] = dataclasses.field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    finalized: bool = False
    flavor: str = "openai"  # or "anthropic" (simulator.anthropic_batch), "gemini"
    inlined: bool = False  # a Gemini batch of inlined requests: its answers are inlined too
    inlined_responses: list[Any] | None = None

    def epoch(self, t: float) -> int:
        """Epoch seconds of monotonic time ``t``."""
        return int(self.wall0 + (t - self.t0))

    def status(self, now: float) -> str:
        """The status at ``now``: a pure function of the schedule and any cancel."""
        if self.cancel_at is not None:
            return "cancelling" if now < self.cancel_at + self.cancel_secs else "cancelled"
        if now < self.t_valid:
            return "validating"
        if self.errors:
            return "failed"
        if self.expiring:
            return "in_progress" if now < self.t_end else "expired"
        if now < self.t_fin:
            return "in_progress"
        return "finalizing" if now < self.t_end else "completed"

    def done_at(self, t: float) -> int:
        """How many lines (in processing order) are done at ``t``, cancel aside."""
        if self.errors or t < self.t_valid:
            return 0
        n, span = len(self.lines), self.t_fin - self.t_valid
        done = n if span <= 0 or t >= self.t_fin else int(n * (t - self.t_valid) / span)
        return min(done, self.keep)

    def line_time(self, i: int) -> float:
        """When the ``i``-th line in processing order is done."""
        return self.t_valid + (self.t_fin - self.t_valid) * (i + 1) / len(self.lines)


class BatchStore:
    """Files and batches, with OpenAI's JSON shapes; used from the server's event loop only.

    Attributes:
        files: The ``FileStore`` (uploads, and the files batches write).
        id_prefix: The seeded hex put in every file, batch and line id.

    Args:
        config: Supplies ``seed``, ``default_max_tokens`` and the ``batch_*`` settings.
        answer: Answers one request body as the online endpoint would (status, body).
        stats: Receives ``files_uploaded``, ``batches_created``, ``batches_cancelled`` and
            ``batch_requests``.
        clock: Monotonic seconds; the batches progress on it (injected for tests).
        wall_clock: Epoch seconds, for the ``*_at`` timestamps.
        anthropic_answer: Answers one Message Batches request as ``POST /v1/messages`` would
            (None: ``/v1/messages/batches`` answers 404); settable after construction.
    """

    def __init__(self, config: SimulatorConfig, answer: Answer, stats: Stats,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 anthropic_answer: Answer | None = None, gemini_answer: Answer | None = None):
        self.config = config
        self._answer = answer
        self.anthropic_answer = anthropic_answer
        self.gemini_answer = gemini_answer
        self._stats = stats
        self._clock = clock
        self._wall_clock = wall_clock
        self.id_prefix = f"{random.Random(f'{config.seed}:batch-ids').getrandbits(32):08x}"
        # Never reset, so that an id from before a reset cannot name a new object.
        self._seq = itertools.count(1)
        self.files = FileStore(self.id_prefix, self._seq, stats, wall_clock)
        self._batches: dict[str, _Batch] = {}

    def reset(self) -> None:
        """Forgets every file and batch."""
        self.files.clear()
        self._batches.clear()

    # ---- batches -----------------------------------------------------------------------------

    def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/batches``: checks the parameters, then validates the file (the verdict shows
        when validation ends).

        Raises:
            BatchApiError: 400 for missing or invalid parameters or an unusable input file.
        """
        input_file_id = params.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise BatchApiError(400, "Missing required parameter: 'input_file_id'.",
                                "input_file_id", "missing_required_parameter")
        endpoint = params.get("endpoint")
        if endpoint != ENDPOINT:
            raise BatchApiError(400, f"Invalid value for 'endpoint': the simulator's Batch API "
                                     f"supports only {ENDPOINT}.", "endpoint", "invalid_value")
        if params.get("completion_window") != COMPLETION_WINDOW:
            raise BatchApiError(400, "Invalid value for 'completion_window': only '24h' is "
                                     "supported.", "completion_window", "invalid_value")
        metadata = _check_metadata(params.get("metadata"))
        source = self.files.find(input_file_id)
        if source is None or source.purpose != "batch":
            why = "No such File object" if source is None else "The file's purpose is not 'batch'"
            raise BatchApiError(400, f"Invalid 'input_file_id': {why}: {input_file_id}",
                                "input_file_id", "invalid_value")

        config, now = self.config, self._clock()
        parsed = parse_input(source.data, ENDPOINT, config.default_max_tokens)
        errors = parsed.errors
        if not errors and config.batch_fail_validation:
            errors = (batch_error("simulated_validation_failure", "The simulator was started with "
                                  "--batch_fail_validation."),)
        limit = config.batch_max_enqueued_tokens
        if not errors and limit:
            enqueued = self._enqueued(parsed.model, now)
            if enqueued + parsed.tokens > limit:
                errors = (batch_error("token_limit_exceeded", f"Enqueued token limit reached "
                                      f"for {parsed.model} in organization org-simulator. Limit: "
                                      f"{limit:,} enqueued tokens, already enqueued: "
                                      f"{enqueued:,}, this batch: {parsed.tokens:,}. Please try "
                                      f"again once some in_progress batches have been "
                                      f"completed."),)
        batch = self._start("batch_", input_file_id, metadata, parsed.model, parsed.lines, errors,
                            now)
        self._stats.batch_requests += parsed.count
        return self._render(batch, "validating")

    def create_messages(self, params: Any) -> dict[str, Any]:
        """``POST /v1/messages/batches``: Anthropic checks the requests when the batch is
        created, so every refusal is an error of this call, never a ``failed`` batch.

        Raises:
            BatchApiError: 400 for a body Anthropic refuses (or ``--batch_fail_validation``),
                413 for too many requests, 429 over ``--batch_max_enqueued_tokens``.
        """
        if self.anthropic_answer is None:
            raise BatchApiError(404, "Message Batches are not served here.")
        config, now = self.config, self._clock()
        lines, model = anthropic_batch.parse_requests(params, config.default_max_tokens)
        if config.batch_fail_validation:
            raise BatchApiError(400, "The simulator was started with --batch_fail_validation.")
        tokens = sum(line.tokens for line in lines)
        limit = config.batch_max_enqueued_tokens
        if limit and self._enqueued(model, now) + tokens > limit:
            raise BatchApiError(429, f"Number of batch tokens in the processing queue exceeds "
                                     f"the limit of {limit:,} for {model}: try again once some "
                                     f"batches have ended.")
        batch = self._start("msgbatch_", "", None, model, lines, (), now, flavor="anthropic")
        self._stats.batch_requests += len(lines)
        return self._render(batch, "validating")

    def create_gemini(self, model: str, input_config: Mapping[str, Any],
                      display_name: str) -> dict[str, Any]:
        """``POST /v1beta/models/{model}:batchGenerateContent`` (``simulator.gemini_batch``):
        the requests of an uploaded file or inlined ones.

        Raises:
            BatchApiError: 400 for a source Gemini refuses, 404 for an unknown file, 429 over
                ``--batch_max_enqueued_tokens``.
        """
        if self.gemini_answer is None:
            raise BatchApiError(404, "Gemini batches are not served here.")
        config, now = self.config, self._clock()
        name = input_config.get("fileName")
        inlined = (input_config.get("requests") or {}).get("requests") if not name else None
        if isinstance(name, str) and name:
            source = self.files.find(name.removeprefix("files/"))
            if source is None:
                raise BatchApiError(404, f"File {name} not found.")
            lines = gemini_batch.parse_file(source.data, model, config.default_max_tokens)
        else:
            lines = gemini_batch.parse_inlined(inlined, model, config.default_max_tokens)
        tokens = sum(line.tokens for line in lines)
        limit = config.batch_max_enqueued_tokens
        if limit and self._enqueued(model, now) + tokens > limit:
            raise BatchApiError(429, f"Enqueued tokens for {model} would exceed the limit of "
                                     f"{limit:,}: try again once some batches have ended.")
        errors = (batch_error("simulated_validation_failure", "The simulator was started with "
                              "--batch_fail_validation."),) if config.batch_fail_validation else ()
        batch = self._start("", name or "", {"displayName": display_name}, model, lines, errors,
                            now, flavor="gemini")
        batch.inlined = not name
        self._stats.batch_requests += len(lines)
        return self._render(batch, "validating")

    def wall(self) -> float:
        """Epoch seconds (the store's wall clock)."""
        return self._wall_clock()

    def count_upload(self) -> None:
        """Counts one file uploaded through another provider's Files API."""
        self._stats.files_uploaded += 1

    def _enqueued(self, model: str | None, now: float) -> int:
        return sum(b.tokens for b in self._batches.values()
                   if b.model == model and not b.errors and b.status(now) in ENQUEUED)

    def _start(self, prefix: str, input_file_id: str, metadata: dict[str, str] | None,
               model: str | None, lines: tuple[InputLine, ...],
               errors: tuple[dict[str, Any], ...], now: float,
               flavor: str = "openai") -> _Batch:
        """Schedules a new batch on the clock (its seeded order, failing and kept lines)."""
        config = self.config
        seq = next(self._seq)
        batch_id = f"{prefix}{self.id_prefix}{seq:012d}"
        rng = random.Random(f"{config.seed}:{batch_id}")
        n = len(lines)
        order = list(range(n))
        rng.shuffle(order)
        failing = frozenset(rng.sample(range(n), round(config.batch_p_line_fail * n)))
        fraction, secs = config.batch_expire_fraction, config.batch_secs
        batch = _Batch(
            id=batch_id, seq=seq, input_file_id=input_file_id, metadata=metadata,
            model=model, lines=lines, errors=errors, tokens=sum(line.tokens for line in lines),
            t0=now, wall0=self._wall_clock(), t_valid=now + _VALIDATING * secs,
            t_fin=now + (1 - _FINALIZING) * secs, t_end=now + secs,
            cancel_secs=min(_FINALIZING * secs, _CANCEL_MAX_SECS), order=order, failing=failing,
            keep=math.floor((1 - fraction) * n + 1e-9), expiring=fraction > 0, flavor=flavor)
        self._batches[batch_id] = batch
        self._stats.batches_created += 1
        return batch

    def _batch(self, batch_id: str, flavor: str = "openai") -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.flavor != flavor:
            raise BatchApiError(404, f"No batch found with id '{batch_id}'.", "batch_id")
        return batch

    def retrieve(self, batch_id: str, flavor: str = "openai") -> dict[str, Any]:
        """``GET /v1/batches/{id}`` (or ``/v1/messages/batches/{id}``): the batch as of now.

        Raises:
            BatchApiError: 404 for an unknown id.
        """
        batch = self._batch(batch_id, flavor)
        return self._render(batch, self._advance(batch, self._clock()))

    def results(self, batch_id: str) -> bytes:
        """``GET /v1/messages/batches/{id}/results``: the JSONL of an ended message batch.

        Raises:
            BatchApiError: 404 for an unknown id; 400 while it is still processing.
        """
        batch = self._batch(batch_id, "anthropic")
        status = self._advance(batch, self._clock())
        if not batch.finalized:
            raise BatchApiError(400, f"Message Batch {batch_id} has not ended yet ({status}): "
                                     "results are available once processing_status is 'ended'.")
        return self.files.get(batch.output_file_id).data if batch.output_file_id else b""

    def list(self, after: str | None = None, limit: int = 20,
             flavor: str = "openai") -> dict[str, Any]:
        """``GET /v1/batches`` (or ``/v1/messages/batches``): a cursor page, newest first.

        Raises:
            BatchApiError: 400 for an unknown ``after`` id.
        """
        now = self._clock()
        newest_first = sorted((b for b in self._batches.values() if b.flavor == flavor),
                              key=lambda b: b.seq, reverse=True)
        listed = page(newest_first, after, limit)
        listed["data"] = [self._render(b, self._advance(b, now)) for b in listed["data"]]
        return listed

    def cancel(self, batch_id: str, flavor: str = "openai") -> dict[str, Any]:
        """``POST /v1/batches/{id}/cancel``: stops a validating or in-progress batch; the lines
        already done are kept (a partial output file once it is ``cancelled``).

        Raises:
            BatchApiError: 404 for an unknown id; 400 if the batch already ended.
        """
        batch = self._batch(batch_id, flavor)
        now = self._clock()
        status = self._advance(batch, now)
        if status in ("cancelling", "cancelled"):
            return self._render(batch, status)
        # A message batch is in_progress until it ends: it can be cancelled while finalizing.
        if status not in (ENQUEUED if flavor != "openai" else CANCELLABLE):
            raise BatchApiError(400, f"Cannot cancel a batch with status '{status}'.")
        batch.cancel_at = now
        self._stats.batches_cancelled += 1
        return self._render(batch, "cancelling")

    # ---- progress ----------------------------------------------------------------------------

    def catch_up(self, budget: int, batch_id: str | None = None) -> bool:
        """Answers at most ``budget`` lines that are due by now (so that a caller can yield to
        other requests between calls instead of answering a large batch in one go).

        Args:
            budget: The most lines to answer in this call.
            batch_id: Only this batch; None for every batch.

        Returns:
            Whether due lines remain unanswered.
        """
        now = self._clock()
        batches = ([self._batches[batch_id]] if batch_id in self._batches
                   else [] if batch_id is not None else list(self._batches.values()))
        for batch in batches:
            budget -= self._answer_due(batch, now, budget)
            if budget <= 0:
                return True
        return False

    def _answer_due(self, batch: _Batch, now: float, budget: int | None = None) -> int:
        """Answers the lines done by ``now`` (at most ``budget``); returns how many."""
        upto = now if batch.cancel_at is None else min(now, batch.cancel_at)
        target = batch.done_at(upto)
        if budget is not None:
            target = min(target, batch.answered + budget)
        start = batch.answered
        while batch.answered < target:
            self._answer_line(batch, batch.answered)
            batch.answered += 1
        return batch.answered - start

    def _advance(self, batch: _Batch, now: float) -> str:
        """Answers the lines done by ``now``, writes the files of a batch that ended; returns
        the status at ``now``."""
        status = batch.status(now)
        self._answer_due(batch, now)
        if status in ("completed", "expired", "cancelled") and not batch.finalized:
            self._finalize(batch, status)
        return status

    def _answer_line(self, batch: _Batch, i: int) -> None:
        index = batch.order[i]
        line = batch.lines[index]
        anthropic = batch.flavor == "anthropic"
        gemini = batch.flavor == "gemini"
        if index in batch.failing:
            status, body = 500, (anthropic_batch.LINE_FAILURE if anthropic else
                                 gemini_batch.LINE_FAILURE if gemini else _LINE_FAILURE)
        else:
            answer = (self.anthropic_answer if anthropic else self.gemini_answer if gemini
                      else self._answer)
            status, body = answer(line.body, batch.epoch(batch.line_time(i)))
        if gemini:
            self._count(batch, status, body, gemini_batch.result_line(line.custom_id, status,
                                                                     body))
            return
        if anthropic:
            self._count(batch, status, body, anthropic_batch.result_line(line.custom_id, status,
                                                                        body))
            return
        seq = next(self._seq)
        record = {"id": f"batch_req_{self.id_prefix}{seq:012d}", "custom_id": line.custom_id,
                  "response": {"status_code": status,
                               "request_id": f"{self.id_prefix}{seq:024x}", "body": body},
                  "error": None}
        if status == 200:
            batch.outputs.append(_dumps(record))
            batch.completed += 1
            batch.input_tokens += body["usage"]["prompt_tokens"]
            batch.output_tokens += body["usage"]["completion_tokens"]
        else:
            batch.error_lines.append(_dumps(record))
            batch.failed += 1

    def _count(self, batch: _Batch, status: int, body: dict[str, Any],
               record: dict[str, Any]) -> None:
        """Keeps a message batch's (or a Gemini batch's) result line (one results file)."""
        if status == 200 and batch.flavor == "gemini":
            batch.completed += 1
            tokens_in, tokens_out = gemini_batch.usage_tokens(body)
            batch.input_tokens += tokens_in
            batch.output_tokens += tokens_out
        elif status == 200:
            batch.completed += 1
            usage = body["usage"]
            batch.input_tokens += (usage["input_tokens"] + usage["cache_read_input_tokens"]
                                   + usage["cache_creation_input_tokens"])
            batch.output_tokens += usage["output_tokens"]
        else:
            batch.failed += 1
        batch.outputs.append(_dumps(record))

    def _finalize(self, batch: _Batch, status: str) -> None:
        if batch.flavor == "anthropic":
            if status in _UNRUN:
                batch.outputs.extend(
                    _dumps(anthropic_batch.unrun_line(batch.lines[batch.order[i]].custom_id,
                                                      status))
                    for i in range(batch.answered, len(batch.lines)))
        elif status in _UNRUN and not batch.errors and batch.flavor == "openai":
            code, message = _UNRUN[status]
            for i in range(batch.answered, len(batch.lines)):
                record = {"id": f"batch_req_{self.id_prefix}{next(self._seq):012d}",
                          "custom_id": batch.lines[batch.order[i]].custom_id, "response": None,
                          "error": {"code": code, "message": message}}
                batch.error_lines.append(_dumps(record))
        end = (batch.cancel_at + batch.cancel_secs if batch.cancel_at is not None
               else batch.t_end)
        created_at = batch.epoch(end)
        if batch.inlined:  # Gemini's inlined requests: the answers come inlined in the batch
            batch.inlined_responses = [
                {"response": r["response"], "metadata": {"key": r["key"]}} if "response" in r
                else {"error": r["error"], "metadata": {"key": r["key"]}}
                for r in (json.loads(line) for line in batch.outputs)]
        elif batch.outputs:
            batch.output_file_id = self.files.add(
                b"".join(line + b"\n" for line in batch.outputs),
                f"batch_{batch.id}_output.jsonl", "batch_output", created_at).id
        if batch.error_lines:
            batch.error_file_id = self.files.add(
                b"".join(line + b"\n" for line in batch.error_lines),
                f"batch_{batch.id}_error.jsonl", "batch_output", created_at).id
        # The files hold the answers now; drop the copies and the request bodies.
        batch.total = 0 if batch.errors else len(batch.lines)
        batch.outputs, batch.error_lines, batch.lines = [], [], ()
        batch.finalized = True

    def _render(self, batch: _Batch, status: str) -> dict[str, Any]:
        """OpenAI's ``Batch`` object for ``batch`` in ``status`` (Anthropic's
        ``message_batch`` for a message batch)."""
        if batch.flavor == "anthropic":
            return anthropic_batch.render(batch, status)
        if batch.flavor == "gemini":
            return gemini_batch.render(batch, status, f"files/{batch.output_file_id}"
                                       if batch.output_file_id else None)
        epoch = batch.epoch
        ran = not batch.errors and status not in ("validating", "failed") and (
            batch.cancel_at is None or batch.cancel_at >= batch.t_valid)
        total = batch.total if batch.finalized else (0 if batch.errors else len(batch.lines))
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": {"object": "list", "data": list(batch.errors)} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": epoch(batch.t0),
            "in_progress_at": epoch(batch.t_valid) if ran else None,
            "expires_at": epoch(batch.t_end) if batch.expiring else epoch(batch.t0) + _DAY,
            "finalizing_at": epoch(batch.t_fin) if status in ("finalizing", "completed")
            else None,
            "completed_at": epoch(batch.t_end) if status == "completed" else None,
            "failed_at": epoch(batch.t_valid) if status == "failed" else None,
            "expired_at": epoch(batch.t_end) if status == "expired" else None,
            "cancelling_at": epoch(batch.cancel_at) if batch.cancel_at is not None else None,
            "cancelled_at": epoch(batch.cancel_at + batch.cancel_secs)
            if status == "cancelled" and batch.cancel_at is not None else None,
            "request_counts": {"total": total if status != "validating" else 0,
                               "completed": batch.completed, "failed": batch.failed},
            "metadata": batch.metadata,
            "model": batch.model,
            "usage": {"input_tokens": batch.input_tokens,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": batch.output_tokens,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": batch.input_tokens + batch.output_tokens},
        }


def _check_metadata(value: Any) -> dict[str, str] | None:
    """Returns OpenAI-valid metadata (at most 16 string pairs, keys <= 64, values <= 512)."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()):
        raise BatchApiError(400, "Invalid 'metadata': expected at most 16 string key-value "
                                 "pairs, keys up to 64 and values up to 512 characters.",
                            "metadata", "invalid_value")
    return dict(value)


