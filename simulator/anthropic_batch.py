"""Anthropic's Message Batches API on the simulator: ``/v1/messages/batches``.

The batches live in the simulator's one ``BatchStore`` (``simulator.batch``): the same schedule
on the same clock (``--batch_secs``), the same fault flags (``--batch_p_line_fail``,
``--batch_expire_fraction``, ``--batch_fail_validation``, ``--batch_max_enqueued_tokens``,
``--batch_stall_secs``), and each request answered by the same code as ``POST /v1/messages``
(prompt cache included). This module holds what is Anthropic's own: the request list's checks,
the result lines, the ``message_batch`` object and the HTTP handlers.

    client = anthropic.Anthropic(base_url=sim.root_url, api_key="test", max_retries=0)
    batch = client.messages.batches.create(requests=[
        {"custom_id": "t-1", "params": {"model": "claude-haiku-4-5", "max_tokens": 64,
                                        "messages": [{"role": "user", "content": "Hi"}]}}])
    client.messages.batches.retrieve(batch.id).processing_status   # "in_progress", "ended"
    for line in client.messages.batches.results(batch.id): ...     # succeeded / errored / ...

What differs from OpenAI's: no file upload (the requests are the create call's body, at most
100,000 of them); the envelope is checked when the batch is created (a 400 then, never a
``failed`` batch); ``processing_status`` is ``in_progress``, ``canceling`` or ``ended``; the
request counts stay ``processing`` until the batch ends; results are one JSONL stream of
``{"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" | "expired", ...}}``
at the batch's ``results_url``.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from simulator.batch_files import BatchApiError
from simulator.batch_input import InputLine
from simulator.tokens import count_tokens

#: Most requests in one message batch, as at Anthropic.
MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_STATUS = {"validating": "in_progress", "in_progress": "in_progress",
           "finalizing": "in_progress", "cancelling": "canceling"}
RESULTS_CONTENT_TYPE = "application/binary"
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
          529: "overloaded_error"}
# The body of an errored line failed by --batch_p_line_fail.
LINE_FAILURE = {"type": "error", "error": {"type": "api_error",
                                           "message": "Internal server error"}}


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).isoformat(
        ).replace("+00:00", "Z")


def parse_requests(params: Any, default_max_tokens: int) -> tuple[tuple[InputLine, ...], str]:
    """Checks a create call's body: ``requests``, each with a unique ``custom_id`` and
    ``params`` naming a ``model``. The params themselves are checked when the request runs
    (a bad one is an ``errored`` result, as at Anthropic).

    Returns:
        (the request lines, the first request's model).

    Raises:
        BatchApiError: 400 for a body Anthropic refuses, 413 over ``MAX_REQUESTS``.
    """
    requests = params.get("requests") if isinstance(params, Mapping) else None
    if not isinstance(requests, list) or not requests:
        raise BatchApiError(400, "requests: Field required (a non-empty list)")
    if len(requests) > MAX_REQUESTS:
        raise BatchApiError(413, f"requests: a batch may hold at most {MAX_REQUESTS:,} requests, "
                                 f"got {len(requests):,}")
    lines, seen = [], set()
    for i, request in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(request, Mapping):
            raise BatchApiError(400, f"{where}: Input should be a valid dictionary")
        cid = request.get("custom_id")
        if not isinstance(cid, str) or not _CUSTOM_ID.fullmatch(cid):
            raise BatchApiError(400, f"{where}.custom_id: String should match pattern "
                                     "'^[a-zA-Z0-9_-]{1,64}$'")
        if cid in seen:
            raise BatchApiError(400, f"{where}.custom_id: Duplicate custom_id '{cid}': each "
                                     "request in a batch needs a unique custom_id")
        seen.add(cid)
        body = request.get("params")
        if not isinstance(body, Mapping) or not isinstance(body.get("model"), str):
            raise BatchApiError(400, f"{where}.params.model: Field required")
        max_tokens = body.get("max_tokens")
        out = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else (
            default_max_tokens)
        text = json.dumps([body.get("system"), body.get("messages")], ensure_ascii=False)
        lines.append(InputLine(i + 1, cid, dict(body), count_tokens(text) + out))
    return tuple(lines), lines[0].body["model"]


def result_line(custom_id: str, status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """One results line for a request that ran: ``succeeded`` with its message, or
    ``errored`` with Anthropic's error body."""
    if status == 200:
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": dict(body)}}


def unrun_line(custom_id: str, status: str) -> dict[str, Any]:
    """The results line of a request the batch never ran (``canceled`` or ``expired``)."""
    return {"custom_id": custom_id,
            "result": {"type": "canceled" if status == "cancelled" else "expired"}}


def render(batch: Any, status: str) -> dict[str, Any]:
    """The ``message_batch`` object of a ``simulator.batch._Batch`` in (OpenAI-worded)
    ``status``; ``results_url`` is a path the HTTP layer makes absolute."""
    epoch = batch.epoch
    ended = status not in _STATUS
    counts = {"processing": len(batch.lines) if not ended else 0, "succeeded": 0, "errored": 0,
              "canceled": 0, "expired": 0}
    if ended:
        counts.update(succeeded=batch.completed, errored=batch.failed)
        unrun = batch.total - batch.completed - batch.failed
        counts["canceled" if status == "cancelled" else "expired"] = max(0, unrun)
    end = (batch.cancel_at + batch.cancel_secs if batch.cancel_at is not None else batch.t_end)
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": _STATUS.get(status, "ended"),
        "request_counts": counts,
        "ended_at": _rfc3339(epoch(end)) if ended else None,
        "created_at": _rfc3339(epoch(batch.t0)),
        "expires_at": _rfc3339(epoch(batch.t_end) if batch.expiring else epoch(batch.t0) + 86_400),
        "archived_at": None,
        "cancel_initiated_at": (_rfc3339(epoch(batch.cancel_at)) if batch.cancel_at is not None
                                else None),
        "results_url": f"/v1/messages/batches/{batch.id}/results" if ended else None,
    }


class MessageBatchRoutes:
    """The ``/v1/messages/batches`` handlers over the simulator's ``BatchStore``.

    Args:
        store: The files and batches (``create_messages`` and the ``anthropic`` flavour).
        messages: The ``AnthropicRoutes`` (their key and version checks and error bodies).
        stall: The Batch API's ``--batch_stall_secs`` wait (after the batch exists).
        catch_up: Answers the due lines of one batch (or all), yielding between chunks.
    """

    def __init__(self, store: Any, messages: Any, stall: Any, catch_up: Any):
        self.store = store
        self._messages = messages
        self._stall = stall
        self._catch_up = catch_up

    def add_routes(self, app: web.Application) -> None:
        """Registers the endpoints on ``app`` (before any catch-all route)."""
        router = app.router
        router.add_post("/v1/messages/batches", self._wrap(self.create))
        router.add_get("/v1/messages/batches", self._wrap(self.list))
        router.add_get("/v1/messages/batches/{batch_id}", self._wrap(self.retrieve))
        router.add_post("/v1/messages/batches/{batch_id}/cancel", self._wrap(self.cancel))
        router.add_get("/v1/messages/batches/{batch_id}/results", self._wrap(self.results))

    def _wrap(self, handler):
        async def handle(request: web.Request) -> web.StreamResponse:
            refused = self._messages.check_request(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except BatchApiError as exc:
                status = exc.status if exc.status in _TYPES else 400
                return self._messages.error_response(status, exc.message)
        return handle

    def _json(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        return web.json_response(self._absolute(request, body), headers=self._headers())

    def _headers(self) -> dict[str, str]:
        return self._messages.id_headers()

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches``."""
        try:
            params = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise BatchApiError(400, "The request body is not valid JSON.") from None
        created = self.store.create_messages(params)
        await self._stall()
        return self._json(request, created)

    async def list(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches``: newest first; ``after_id``, ``limit`` (1-1000)."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise BatchApiError(400, "limit: Input should be between 1 and 1000")
        await self._catch_up()
        listed = self.store.list(request.query.get("after_id"), limit, flavor="anthropic")
        listed.pop("object", None)
        return web.json_response(
            {**listed, "data": [self._absolute(request, b) for b in listed["data"]]},
            headers=self._headers())

    @staticmethod
    def _absolute(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("results_url"):
            return {**body, "results_url": f"{request.url.origin()}{body['results_url']}"}
        return body

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches/{id}``."""
        batch_id = request.match_info["batch_id"]
        await self._catch_up(batch_id)
        return self._json(request, self.store.retrieve(batch_id, flavor="anthropic"))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches/{id}/cancel``."""
        batch_id = request.match_info["batch_id"]
        await self._catch_up(batch_id)
        return self._json(request, self.store.cancel(batch_id, flavor="anthropic"))

    async def results(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches/{id}/results``: JSONL, once the batch ended."""
        batch_id = request.match_info["batch_id"]
        await self._catch_up(batch_id)
        data = self.store.results(batch_id)
        return web.Response(body=data, headers={**self._headers(),
                                                "Content-Type": RESULTS_CONTENT_TYPE})
