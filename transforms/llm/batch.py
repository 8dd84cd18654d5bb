"""The provider's Batch API, the pure parts: request ids, outcome records, the prefetched layer.

With ``--api batch`` every ticket's chat request is sent through the provider's Batch API (half
price, a separate quota, answered within 24 h) instead of one HTTP request each. This module holds
what that needs that does no I/O, so each piece is tested alone:

* :func:`custom_id` and :func:`request_line` — one line of a batch input file per distinct
  request; the id is derived from :func:`transforms.store.request_key`, so identical requests in
  one run share one line (and one answer), and a request is found again after a crash by its id
  (the line's format is the provider's, ``batch_request_line`` in
  :mod:`transforms.llm.providers.openai`, :mod:`~transforms.llm.providers.anthropic_batch` or
  :mod:`~transforms.llm.providers.gemini_batch`,
  which classify their output lines too);
* :func:`line_tokens` — what a line counts against the provider's enqueued-token limit;
* :func:`outcome_record` — the outcome line the driver writes for the collect pipeline (the
  answer's cost at the batch price and what it would have cost online are computed here, once);
* :class:`BatchOutcomeLayer` — a layer of the LLM stack (under the store and the repair, over
  the online flow control) that answers a ticket from its prefetched outcome: a 200 is the
  answer (no request, no limiter), an error is raised as the typed error online would raise, and
  a ticket without an outcome (a deadline's leftover) is answered online.

Example::

    line = request_line(answerer.request(ticket).params)    # '{"custom_id": "tf-…", …}'
    outcome = wire.classify_line(json.loads(output_line))
    record = outcome_record(outcome, round_no=1, batch_price=half, online_price=full)
    layer = BatchOutcomeLayer(flow)      # trace.prefetched = the ticket's outcome record
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Mapping

from transforms import errors
from transforms.llm.caller import Answer, Completion, Request
from transforms.llm.providers import OK, LineOutcome, batch_wire
from transforms.llm.providers import anthropic as anthropic_wire
from transforms.llm.providers import gemini as gemini_wire
from transforms.llm.providers import openai as wire
from transforms.pricing import Price
from transforms.store import request_key

#: Length of the request key's hex kept in a custom_id (160 bits: no collision in practice, and
#: the whole id stays under the 64 characters some providers allow).
_ID_HEX = 40
CUSTOM_ID_PREFIX = "tf-"

#: Error codes of lines a batch never ran (its window expired, or it was cancelled).
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})


class BatchNotRun(errors.RetryableError):
    """A line the batch never ran (expired or cancelled): the same request may succeed later."""
    reason = "batch_expired"


def custom_id(params: Mapping[str, Any]) -> str:
    """The stable id of a chat request in a batch: ``tf-`` + its request key (first 40 hex)."""
    return CUSTOM_ID_PREFIX + request_key(params)[:_ID_HEX]


def request_line(params: Mapping[str, Any], config: Any = None) -> str:
    """One line of a batch input file (JSON, no newline) for a chat request, in the wire format
    of ``config.provider`` (``config``: the ``LlmConfig``; None: OpenAI's)."""
    provider = getattr(config, "provider", "openai")
    return batch_wire(provider).batch_request_line(custom_id(params), params, config)


def request_body(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request of a parsed request line: OpenAI's ``body``, Anthropic's ``params``,
    Gemini's ``request``."""
    return record.get("body") or record.get("params") or record.get("request") or {}


def line_id(record: Mapping[str, Any]) -> str:
    """The id of a parsed request line: ``custom_id`` (OpenAI, Anthropic) or Gemini's ``key``.

    Raises:
      KeyError: the line has neither.
    """
    return record["custom_id"] if "custom_id" in record else record["key"]


def _content_tokens(content: Any) -> int:
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return (len(content) + 3) // 4 if isinstance(content, str) else 0


def line_tokens(body: Mapping[str, Any]) -> int:
    """What one request counts against an enqueued-token limit: its prompt (characters / 4 per
    message, + 3 per message + 3) plus its ``max_tokens``, as the online limiter charges."""
    messages = body.get("messages") or []
    prompt = 3 + sum(_content_tokens(m.get("content")) + 3 for m in messages
                     if isinstance(m, Mapping))
    if body.get("system"):  # Anthropic's system prompt, outside the messages
        prompt += _content_tokens(body["system"]) + 3
    # Gemini's contents and systemInstruction ({"parts": [{"text"}]}), maxOutputTokens.
    for turn in (body.get("contents") or []) + [body.get("systemInstruction") or {}]:
        if isinstance(turn, Mapping) and turn.get("parts"):
            prompt += _content_tokens(turn["parts"]) + 3
    most = (body.get("max_completion_tokens") or body.get("max_tokens")
            or (body.get("generationConfig") or {}).get("maxOutputTokens") or 0)
    return prompt + int(most)


def outcome_record(outcome: LineOutcome, round_no: int, batch_price: Price,
                   online_price: Price) -> Dict[str, Any]:
    """The outcome line the collect pipeline hands its ticket (JSON-ready).

    Args:
      outcome: The classified line (its final state: ok, permanent, or retryable and exhausted).
      round_no: The round it was answered in (1 for the first submission); rounds are counted
        as attempts.
      batch_price: The price of the answer (the Batch API's).
      online_price: What the answer would have cost online.
    """
    out: Dict[str, Any] = {"custom_id": outcome.custom_id, "round": round_no,
                           "status": outcome.status, "request_id": outcome.request_id}
    if outcome.provider != "openai":
        out["provider"] = outcome.provider
    c = outcome.completion
    if outcome.kind == OK and c is not None:
        out["completion"] = c
        args = (c["prompt_tokens"], c["completion_tokens"], c["cached_tokens"])
        out["cost_usd"] = batch_price.cost(*args)
        out["online_cost_usd"] = online_price.cost(*args)
    else:
        out["code"] = outcome.code
        out["message"] = outcome.message
    return out


def error_of(record: Mapping[str, Any]) -> errors.ProviderError:
    """The typed error of a failed outcome record (the class online would have raised)."""
    status, code = record.get("status"), record.get("code")
    message = record.get("message") or f"batch line failed ({code or status})"
    if status is None:
        cls = BatchNotRun if code in NOT_RUN_CODES else errors.ServerError
    elif status == 200:
        cls = errors.MalformedResponse
    elif record.get("provider") == "anthropic":
        cls = anthropic_wire.error_for(int(status), code, message)
    elif record.get("provider") == "gemini":
        cls = gemini_wire.error_for(int(status), code, message)
    else:
        cls = wire.error_for_status(int(status), code, message)
    exc = cls(f"batch API: {message}", status=status if status != 200 else None,
              request_id=record.get("request_id"), code=code)
    return exc


class BatchOutcomeLayer:
    """Answers a request from the ticket's prefetched Batch API outcome, else online.

    The outcome travels with the ticket (``CallTrace.prefetched``, set by the answerer from
    ``Ticket.batch_outcome``) and is used once, for the request whose ``custom_id`` it names: a
    repair request (other messages) or a ticket without an outcome goes to the layer below.

    Args:
      inner: The online layer below (``answer(request, trace) -> Answer``).
      wall: Wall clock (attempt timestamps).
    """

    def __init__(self, inner, wall: Callable[[], float] = time.time):
        self._inner = inner
        self._wall = wall

    async def answer(self, request: Request, trace) -> Answer:
        """The batch's answer, or the online one.

        Raises:
          errors.ProviderError: the batch's error for this request (permanent, or retryable
            after the last round), as online would raise it.
        """
        text = getattr(trace, "prefetched", None)
        if not text:
            return await self._inner.answer(request, trace)
        record = json.loads(text) if isinstance(text, str) else text
        if record.get("custom_id") != custom_id(request.params):
            return await self._inner.answer(request, trace)
        trace.prefetched = None
        if record.get("completion") is not None and record.get("shared"):
            # An identical request of another ticket paid for this answer: free here.
            return Answer(_to_completion(record), cached=True)
        rounds = max(1, int(record.get("round") or 1))
        trace.attempts += rounds
        trace.call_attempts = rounds
        trace.retries += rounds - 1
        now = self._wall()
        trace.first_at = trace.first_at or now
        trace.last_at = now
        if record.get("completion") is None:
            raise error_of(record)
        completion = _to_completion(record)
        cost = float(record.get("cost_usd") or 0.0)
        trace.prompt_tokens += completion.prompt_tokens
        trace.completion_tokens += completion.completion_tokens
        trace.cost += cost
        trace.batch_answers = 1
        trace.batch_discount += max(0.0, float(record.get("online_cost_usd") or 0.0) - cost)
        return Answer(completion)


def _to_completion(record: Mapping[str, Any]) -> Completion:
    c = record["completion"]
    return Completion(content=c.get("content") or "", model=c.get("model"),
                      finish_reason=c.get("finish_reason"),
                      prompt_tokens=int(c.get("prompt_tokens") or 0),
                      completion_tokens=int(c.get("completion_tokens") or 0),
                      cached_tokens=int(c.get("cached_tokens") or 0),
                      request_id=record.get("request_id"))
