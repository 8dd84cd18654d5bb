"""The response store as a layer: a paid answer is never paid again.

:class:`StoreLayer` wraps the layer below. Before calling, it looks the request up in the
:class:`~transforms.store.ResponseStore` (a hit costs nothing: ``Answer.cached``); while an
identical request is in flight in this process, a second one waits for it and shares its answer
instead of paying twice; a fresh answer is stored (durably) before it is returned, so it survives
bundle retries, crashes and reruns. A failure to store is logged and the answer still returned.

Example::

    layer = StoreLayer(RepairLayer(flow, validator), ResponseStore("gs://b/store"), wall=time.time)
    answer = await layer.answer(request, trace)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, Optional

from transforms import errors
from transforms.llm.caller import Answer, Completion, Request
from transforms.llm.trace import CallTrace
from transforms.store import ResponseStore, request_key

_LOG = logging.getLogger(__name__)


def stored_record(answer: Answer, trace: CallTrace, stored_at: float) -> Dict[str, Any]:
    """What the store keeps for an answer (the same document since the store was introduced)."""
    c = answer.completion
    return {"content": c.content, "model": c.model, "finish_reason": c.finish_reason,
            "prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.completion_tokens,
            "cost_usd": trace.cost, "request_id": c.request_id, "output": answer.output,
            "stored_at": stored_at}


def answer_from_store(stored: Dict[str, Any]) -> Answer:
    """A stored document as a cached answer."""
    completion = Completion(
        content=stored.get("content") or "", model=stored.get("model"),
        finish_reason=stored.get("finish_reason"),
        prompt_tokens=int(stored.get("prompt_tokens") or 0),
        completion_tokens=int(stored.get("completion_tokens") or 0),
        request_id=stored.get("request_id"))
    return Answer(completion, stored.get("output"), cached=True)


class StoreLayer:
    """Looks up, shares and stores answers by request.

    Args:
      inner: The layer below (``answer(request, trace) -> Answer``).
      store: The response store.
      wall: Wall clock for ``stored_at``.
      secrets: Strings to redact from logged messages.
    """

    def __init__(self, inner, store: ResponseStore, wall: Callable[[], float] = time.time,
                 secrets=()):
        self._inner = inner
        self._store = store
        self._wall = wall
        self._secrets = list(secrets)
        self._in_flight: Dict[str, "asyncio.Future[Optional[Dict[str, Any]]]"] = {}

    async def answer(self, request: Request, trace: CallTrace) -> Answer:
        key = request_key(request.params)
        stored = await asyncio.to_thread(self._store.get, key)
        if stored is not None:
            return answer_from_store(stored)
        waiting = self._in_flight.get(key)
        if waiting is not None:
            # An identical request is in flight: share its answer rather than pay twice.
            shared = await asyncio.shield(waiting)
            if shared is not None:
                return answer_from_store(shared)
            return await self._inner.answer(request, trace)
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        record = None
        try:
            answer = await self._inner.answer(request, trace)
            record = stored_record(answer, trace, self._wall())
            try:
                await asyncio.to_thread(self._store.put, key, record)
            except Exception as exc:  # noqa: BLE001 - the answer is still returned and written
                _LOG.warning("response store: could not store a response (%s: %s)",
                             type(exc).__name__, errors.redact(str(exc), self._secrets))
            return answer
        finally:
            del self._in_flight[key]
            future.set_result(record)
