"""The HTTP side of the simulator's Batch API: OpenAI's file and batch endpoints on aiohttp.

    routes = BatchRoutes(store, authorized=simulator.authorized)
    routes.add_routes(app)   # before any catch-all route

Every handler checks the API key (when the simulator has one), turns ``BatchApiError`` into
OpenAI's error body and any unexpected exception into a logged 500, never a crash.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from simulator.batch import BatchStore
from simulator.batch_files import BatchApiError

_LOG = logging.getLogger(__name__)
_MAX_UPLOAD = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
_JSON = "application/json"
# Lines answered between yields to the event loop (~50 ms of work), so that polling a large
# batch does not stall the online endpoint for seconds.
_CHUNK = 500

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= high:
        raise BatchApiError(400, f"Invalid '{name}': expected an integer between 1 and {high}.",
                            name, "invalid_value")
    return value


class BatchRoutes:
    """The ``/v1/files`` and ``/v1/batches`` handlers over a ``BatchStore``.

    Args:
        store: The files and batches.
        authorized: Returns whether a request carries the right API key.
    """

    def __init__(self, store: BatchStore, authorized: Callable[[web.Request], bool]):
        self.store = store
        self._authorized = authorized
        self._ids = itertools.count(1)
        self._id_prefix = store.id_prefix

    def add_routes(self, app: web.Application) -> None:
        """Registers the endpoints on ``app``."""
        router = app.router
        router.add_post("/v1/files", self._wrap(self.upload))
        router.add_get("/v1/files", self._wrap(self.list_files))
        router.add_get("/v1/files/{file_id}", self._wrap(self.get_file))
        router.add_delete("/v1/files/{file_id}", self._wrap(self.delete_file))
        router.add_get("/v1/files/{file_id}/content", self._wrap(self.file_content))
        router.add_post("/v1/batches", self._wrap(self.create_batch))
        router.add_get("/v1/batches", self._wrap(self.list_batches))
        router.add_get("/v1/batches/{batch_id}", self._wrap(self.get_batch))
        router.add_post("/v1/batches/{batch_id}/cancel", self._wrap(self.cancel_batch))

    # ---- plumbing ----------------------------------------------------------------------------

    def _headers(self, content_type: str = _JSON) -> dict[str, str]:
        return {"x-request-id": f"req_{self._id_prefix}b{next(self._ids):011d}",
                "Content-Type": content_type}

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, headers=self._headers(),
                            body=json.dumps(body, separators=(",", ":"),
                                            ensure_ascii=False).encode("utf-8"))

    def _error(self, status: int, message: str, type_: str, code: str | None,
               param: str | None = None) -> web.Response:
        return self._json({"error": {"message": message, "type": type_, "param": param,
                                     "code": code}}, status)

    def _wrap(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            if not self._authorized(request):
                # Never echo what the client sent: it may be a real key pasted by mistake.
                return self._error(401, "Incorrect API key provided.", "invalid_request_error",
                                   "invalid_api_key")
            try:
                return await handler(request)
            except BatchApiError as exc:
                return self._error(exc.status, exc.message, "invalid_request_error", exc.code,
                                   exc.param)
            except web.HTTPException as exc:  # e.g. 413 from reading an oversized body
                return self._error(exc.status, exc.reason, "invalid_request_error", None)
            except Exception:  # noqa: BLE001 - nothing a client sends may take the server down
                _LOG.exception("unexpected error in the Batch API")
                return self._error(500, "The server had an error while processing your "
                                        "request. Sorry about that!", "server_error", None)
        return handle

    async def stall(self) -> None:
        """--batch_stall_secs: the object exists, the answer is late (a crash window)."""
        if self.store.config.batch_stall_secs > 0:
            await asyncio.sleep(self.store.config.batch_stall_secs)

    async def catch_up(self, batch_id: str | None = None) -> None:
        while self.store.catch_up(_CHUNK, batch_id):
            await asyncio.sleep(0)

    # ---- files -------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /v1/files``: multipart with ``file`` and ``purpose``."""
        if not request.content_type.startswith("multipart/"):
            raise BatchApiError(400, "Expected a multipart/form-data body with 'file' and "
                                     "'purpose'.", None, "invalid_request")
        reader = await request.multipart()
        data: bytes | None = None
        filename = purpose = None
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                chunks, size = [], 0
                while chunk := await part.read_chunk():
                    size += len(chunk)
                    if size > _MAX_UPLOAD:
                        raise BatchApiError(413, f"File too large: the limit is {_MAX_UPLOAD} "
                                                 f"bytes.", "file")
                    chunks.append(chunk)
                data, filename = b"".join(chunks), part.filename or "upload"
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
        if data is None:
            raise BatchApiError(400, "Missing required parameter: 'file'.", "file",
                                "missing_required_parameter")
        if not purpose:
            raise BatchApiError(400, "Missing required parameter: 'purpose'.", "purpose",
                                "missing_required_parameter")
        uploaded = self.store.files.upload(data, filename, purpose)
        await self.stall()
        return self._json(uploaded)

    async def list_files(self, request: web.Request) -> web.Response:
        """``GET /v1/files``: ``purpose``, ``after``, ``limit`` (<= 10,000), ``order``."""
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise BatchApiError(400, "Invalid 'order': expected 'asc' or 'desc'.", "order",
                                "invalid_value")
        return self._json(self.store.files.list(
            request.query.get("purpose"), request.query.get("after"),
            _query_int(request, "limit", 10_000, 10_000), order))

    async def get_file(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{id}``: the file's metadata."""
        return self._json(self.store.files.get(request.match_info["file_id"]).to_json())

    async def delete_file(self, request: web.Request) -> web.Response:
        """``DELETE /v1/files/{id}``."""
        return self._json(self.store.files.delete(request.match_info["file_id"]))

    async def file_content(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{id}/content``: the raw bytes."""
        data = self.store.files.get(request.match_info["file_id"]).data
        return web.Response(body=data, headers=self._headers("application/octet-stream"))

    # ---- batches -----------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batches``."""
        try:
            params = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise BatchApiError(400, "We could not parse the JSON body of your request.") \
                from None
        if not isinstance(params, dict):
            raise BatchApiError(400, "Invalid request body: expected a JSON object.", None,
                                "invalid_type")
        created = self.store.create(params)
        await self.stall()
        return self._json(created)

    async def list_batches(self, request: web.Request) -> web.Response:
        """``GET /v1/batches``: newest first; ``after`` and ``limit`` (1-100, default 20)."""
        await self.catch_up()
        return self._json(self.store.list(request.query.get("after"),
                                          _query_int(request, "limit", 20, 100)))

    async def get_batch(self, request: web.Request) -> web.Response:
        """``GET /v1/batches/{id}``."""
        await self.catch_up(request.match_info["batch_id"])
        return self._json(self.store.retrieve(request.match_info["batch_id"]))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batches/{id}/cancel``."""
        await self.catch_up(request.match_info["batch_id"])
        return self._json(self.store.cancel(request.match_info["batch_id"]))
