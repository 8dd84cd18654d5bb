"""The Batch API's two Beam transforms: pack the requests, hand each ticket its outcome.

* :class:`PackBatchRequests` — validated tickets → batch input files: each ticket's request is
  rendered exactly as online (``TicketAnswerer.request``), identical requests are written once
  (one ``custom_id``), and the files are cut at ``max_lines`` lines and ``max_bytes`` bytes (the
  provider's limits), as ``PREFIX-SSSSS-of-NNNNN.jsonl``. A ticket whose template cannot be
  rendered is not packed (the collect pipeline dead-letters it, as online); with a response
  store, a request already stored is not packed either (it is answered from the store, free).
* :class:`AttachBatchOutcomes` — validated tickets + the outcome files the driver wrote →
  the same tickets, each carrying its outcome (``Ticket.batch_outcome``), joined by
  ``custom_id``. Of several tickets with one request, the first (by id) carries the answer and
  its cost, the others a copy marked ``shared`` (free, as a response-store hit). A ticket
  without an outcome passes unchanged and is answered online.

Example::

    tickets | "PackBatchRequests" >> PackBatchRequests(llm, "out/batch/JOB/round-1/requests")
    tickets | "AttachBatchOutcomes" >> AttachBatchOutcomes(llm, "out/batch/JOB/*/outcomes-*")
"""

from __future__ import annotations

import io
import json
from typing import Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.fileio import EmptyMatchTreatment

from transforms.llm.answer import TicketAnswerer
from transforms.llm.batch import custom_id, request_line
from transforms.llm.providers.openai import MAX_BYTES, MAX_LINES
from transforms.llm.config import LlmConfig
from transforms.prompts import TemplateRenderError
from transforms.records import Ticket
from transforms.store import ResponseStore, request_key

_UNRENDERED = "unrendered"
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"


class _RenderFn(beam.DoFn):
    """Ticket → ``(custom_id, line)``; a template error or a stored answer packs nothing."""

    def __init__(self, config: LlmConfig):
        self._config = config

    def setup(self):
        # No flow below: only request() is used, which renders and never calls.
        self._answerer = TicketAnswerer(self._config, flow=None)
        store = self._config.response_store
        self._store = ResponseStore(store) if store else None

    def process(self, ticket: Ticket) -> Iterable[Tuple[str, str]]:
        try:
            params = self._answerer.request(ticket).params
        except TemplateRenderError:
            return
        if self._store is not None and self._store.get(request_key(params)) is not None:
            return
        yield custom_id(params), request_line(params, self._config)


class PackBatchRequests(beam.PTransform):
    """Writes one batch input line per distinct request of the tickets.

    Args:
      config: The LLM step's configuration (prompt, template, schema, model, max_tokens).
      prefix: Path prefix of the files (local or gs://); ``.jsonl`` shards are written under it.
      max_lines: Most lines per file (the provider's limit: 50,000).
      max_bytes: Most bytes per file (the provider's limit: 200 MB).
    """

    def __init__(self, config: LlmConfig, prefix: str, max_lines: int = MAX_LINES,
                 max_bytes: int = MAX_BYTES):
        super().__init__()
        self._config = config
        self._prefix = prefix
        self._max_lines = max_lines
        self._max_bytes = max_bytes

    def expand(self, tickets):
        return (tickets
                | "RenderBatchRequests" >> beam.ParDo(_RenderFn(self._config))
                # Identical requests are one line: every copy is the same text, keep the least.
                | "OneLinePerRequest" >> beam.CombinePerKey(min)
                | "DropCustomIds" >> beam.Values()
                | "WriteRequestFiles" >> beam.io.WriteToText(
                    self._prefix, file_name_suffix=".jsonl", shard_name_template=SHARD_TEMPLATE,
                    max_records_per_shard=self._max_lines,
                    # The limit counts the newline each line gets too; keep a margin for it.
                    max_bytes_per_shard=self._max_bytes - 1_000_000, skip_if_empty=True))


class _KeyByRequestFn(beam.DoFn):
    """Ticket → ``(custom_id, ticket)``; unrenderable tickets leave by the side output."""

    def __init__(self, config: LlmConfig):
        self._config = config

    def setup(self):
        self._answerer = TicketAnswerer(self._config, flow=None)

    def process(self, ticket: Ticket):
        try:
            yield custom_id(self._answerer.request(ticket).params), ticket
        except TemplateRenderError:
            yield beam.pvalue.TaggedOutput(_UNRENDERED, ticket)


def _outcome_lines(readable: fileio.ReadableFile) -> Iterable[Tuple[str, str]]:
    with readable.open() as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            line = line.strip()
            if line:
                yield json.loads(line)["custom_id"], line


def _preferred(lines) -> Optional[str]:
    """Of the outcomes of one request (normally one), an answer before an error."""
    records = [json.loads(line) for line in lines]
    if not records:
        return None
    records.sort(key=lambda r: (r.get("completion") is None, -int(r.get("round") or 0)))
    return json.dumps(records[0], ensure_ascii=False, separators=(",", ":"))


def _attach(element) -> Iterable[Ticket]:
    _, grouped = element
    tickets = sorted(grouped["tickets"], key=lambda t: t.id)
    outcome = _preferred(grouped["outcomes"])
    if outcome is None:
        yield from tickets
        return
    shared = None
    for i, ticket in enumerate(tickets):
        if i == 0:
            yield ticket.with_batch_outcome(outcome)
            continue
        if shared is None:
            shared = json.dumps({**json.loads(outcome), "shared": True}, ensure_ascii=False,
                                separators=(",", ":"))
        yield ticket.with_batch_outcome(shared)


class AttachBatchOutcomes(beam.PTransform):
    """Hands each ticket the Batch API outcome of its request.

    Args:
      config: The LLM step's configuration (to render each ticket's request, as when packing).
      pattern: Glob of the outcome files the driver wrote (none matching: every ticket online).
    """

    def __init__(self, config: LlmConfig, pattern: str):
        super().__init__()
        self._config = config
        self._pattern = pattern

    def expand(self, tickets):
        keyed = tickets | "KeyByRequest" >> beam.ParDo(
            _KeyByRequestFn(self._config)).with_outputs(_UNRENDERED, main="keyed")
        outcomes = (tickets.pipeline
                    | "OutcomePattern" >> beam.Create([self._pattern])
                    | "MatchOutcomes" >> fileio.MatchAll(EmptyMatchTreatment.ALLOW)
                    | "OpenOutcomes" >> fileio.ReadMatches()
                    | "ReadOutcomes" >> beam.FlatMap(_outcome_lines))
        joined = ({"tickets": keyed.keyed, "outcomes": outcomes}
                  | "JoinOutcomes" >> beam.CoGroupByKey()
                  | "AttachOutcome" >> beam.FlatMap(_attach))
        return (joined, keyed[_UNRENDERED]) | "WithUnrendered" >> beam.Flatten()
