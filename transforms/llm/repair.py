"""Structured output: check each answer against ``--response_schema``; repair once.

:class:`RepairLayer` wraps the layer below. An answer that is not valid JSON for the schema is
sent back ONCE: the conversation gets the invalid answer as the assistant's turn and a user
message stating the validation error (:func:`transforms.structured.repair_messages`). If that
answer is invalid too, :class:`~transforms.errors.InvalidOutput` carries its text. Both requests
go through the layer below, so each has its own retries, within the ticket's deadline.

Example::

    layer = RepairLayer(flow, OutputValidator(schema))
    answer = await layer.answer(request, trace)   # answer.output is the validated object
"""

from __future__ import annotations

import logging

from transforms import errors
from transforms.llm.caller import Answer, Request
from transforms.llm.trace import CallTrace
from transforms.structured import OutputValidator, repair_messages

_LOG = logging.getLogger(__name__)


class RepairLayer:
    """Validates answers and asks for one correction.

    Args:
      inner: The layer below (``answer(request, trace) -> Answer``).
      validator: The compiled schema.
    """

    def __init__(self, inner, validator: OutputValidator):
        self._inner = inner
        self._validator = validator

    async def answer(self, request: Request, trace: CallTrace) -> Answer:
        """The first valid answer, with ``output`` set.

        Raises:
          errors.InvalidOutput: the repaired answer is invalid too (``raw_output`` holds it).
          errors.ProviderError: whatever the layer below raised.
        """
        first = await self._inner.answer(request, trace)
        text = first.completion.content
        output, problem = self._validator.check(text)
        if problem is None:
            return Answer(first.completion, output)
        _LOG.debug("ticket %s: invalid output (%s), asking for a correction", trace.ticket_id,
                   problem)
        repair = request.with_messages(repair_messages(request.messages, text, problem))
        second = await self._inner.answer(repair, trace)
        text = second.completion.content
        output, problem = self._validator.check(text)
        if problem is None:
            return Answer(second.completion, output)
        exc = errors.InvalidOutput(f"invalid output after one repair: {problem}",
                                   request_id=second.completion.request_id)
        exc.raw_output = text
        raise exc
