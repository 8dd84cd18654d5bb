"""One ticket in, one record out: render the prompt, run the layers, build the record.

:class:`TicketAnswerer` is the top of a step's stack: it renders the ticket's messages (a
template that cannot be rendered is a dead letter ``template_error``, no request sent), builds
the request, asks its layers (store → repair → batch outcome → flow control → caller, store and
repair present only when configured; the batch outcome layer answers a ticket that carries its
``--api batch`` outcome and passes every other request down) and turns what comes back into a
:class:`~transforms.records.Result` or a :class:`~transforms.records.DeadLetter`. It never
raises for a bad ticket: an unexpected error is a dead letter ``internal_error`` (replayable)
whose message says what it was.

Example::

    answerer = TicketAnswerer(config, flow)
    record = await answerer.handle(ticket)   # Result or DeadLetter
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Union

from transforms import errors
from transforms.llm.batch import BatchOutcomeLayer
from transforms.llm.cache import StoreLayer
from transforms.llm.caller import Answer, Request
from transforms.llm.config import LlmConfig
from transforms.llm.trace import CallTrace
from transforms.llm.repair import RepairLayer
from transforms.prompts import PromptRenderer, TemplateRenderError
from transforms.records import STAGE_LLM, CallStats, DeadLetter, Result, Ticket
from transforms.store import ResponseStore
from transforms.structured import OutputValidator, schema_overhead_tokens

Record = Union[Result, DeadLetter]


class TicketAnswerer:
    """A step's answerer: its prompt, its schema, its store, over the engine's flow control.

    Args:
      config: The step's configuration.
      flow: The layer to call through (``answer(request, trace) -> Answer``): the engine's
        :class:`~transforms.llm.flow.FlowControl`, or a fake in tests.
      clock: Monotonic clock (the per-ticket deadline).
      wall: Wall clock (record timestamps).
      secrets: Strings to redact from messages.
    """

    def __init__(self, config: LlmConfig, flow, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, secrets=()):
        self.config = config
        self._clock = clock
        self._wall = wall
        self._secrets = list(secrets)
        # Compiled once per process, not per ticket (the driver already checked both compile).
        self._prompts = PromptRenderer(config.prompt_template, config.system_prompt,
                                       prefix=getattr(config, "prompt_prefix", None))
        self._response_format = None
        self._schema_tokens = 0
        # A ticket carrying a Batch API outcome is answered from it; any other goes online.
        layer = BatchOutcomeLayer(flow, wall=wall)
        if config.structured is not None:
            self._response_format = config.structured.response_format()
            self._schema_tokens = schema_overhead_tokens(config.structured.schema)
            layer = RepairLayer(layer, OutputValidator(config.structured.schema))
        if config.response_store:
            layer = StoreLayer(layer, ResponseStore(config.response_store), wall=wall,
                               secrets=secrets)
        self._layers = layer

    def request(self, ticket: Ticket) -> Request:
        """The ticket's request.

        Raises:
          TemplateRenderError: the prompt template cannot be rendered for this ticket.
        """
        c = self.config
        params = {"model": c.model, "messages": self._prompts.render(ticket),
                  "max_tokens": c.max_tokens}
        if c.temperature is not None:
            params["temperature"] = c.temperature
        if self._response_format is not None:
            params["response_format"] = self._response_format
        return Request(params, schema_tokens=self._schema_tokens)

    async def handle(self, ticket: Ticket) -> Record:
        """Answers one ticket; returns a Result or a DeadLetter, never raises."""
        started = self._wall()
        trace = CallTrace(self._clock() + self.config.max_ticket_secs, ticket.id)
        trace.prefetched = ticket.batch_outcome
        try:
            request = self.request(ticket)
            answer = await self._layers.answer(request, trace)
        except TemplateRenderError as exc:
            return self.dead_letter(ticket, errors.TemplateFailed(str(exc)), trace)
        except errors.ProviderError as exc:
            return self.dead_letter(ticket, exc, trace)
        except Exception as exc:  # noqa: BLE001 - a bad item never raises out of the DoFn
            wrapped = errors.ProviderError(
                errors.redact(f"internal error: {type(exc).__name__}: {exc}", self._secrets))
            wrapped.reason = "internal_error"
            return self.dead_letter(ticket, wrapped, trace)
        return self.result(ticket, answer, trace, started)

    def result(self, ticket: Ticket, answer: Answer, trace: CallTrace, started: float) -> Result:
        c = answer.completion
        if answer.cached:
            # No request, no cost: only the stored token counts.
            now = self._wall()
            started = now
            stats = CallStats(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
        else:
            now = self._wall()
            stats = trace.freeze()
        return Result(id=ticket.id, response=c.content,
                      model=c.model or trace.model or self.config.model,
                      finish_reason=c.finish_reason, started_at=started, finished_at=now,
                      ticket=ticket.fields, request_id=c.request_id, cached=answer.cached,
                      output=answer.output, stats=stats, origin=ticket.origin,
                      endpoint=None if answer.cached else trace.endpoint)

    def dead_letter(self, ticket: Ticket, exc: errors.ProviderError,
                    trace: Optional[CallTrace] = None) -> DeadLetter:
        trace = trace or CallTrace(0.0, ticket.id)
        reason = exc.reason
        if exc.retryable:
            reason = trace.exhausted_reason(self.config.retry.max_retries)
        return DeadLetter(
            id=ticket.id, stage=STAGE_LLM, reason=reason, error_class=type(exc).__name__,
            message=errors.redact(exc.message, self._secrets), http_status=exc.status,
            ticket=ticket.fields, source=ticket.source, line=ticket.line,
            raw_output=getattr(exc, "raw_output", None), stats=trace.freeze(),
            origin=ticket.origin)

    def interrupted(self, ticket: Ticket) -> DeadLetter:
        """The dead letter of a ticket never sent because the run is stopping."""
        return self.dead_letter(ticket, errors.Interrupted(
            "the run was stopped before this ticket was sent; replay it"))
