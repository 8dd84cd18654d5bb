"""Gemini's batch mode on the simulator: the Files API and ``batchGenerateContent``.

The batches live in the simulator's one ``BatchStore`` (``simulator.batch``): the same schedule
on the same clock (``--batch_secs``), the same fault flags (``--batch_p_line_fail``,
``--batch_expire_fraction``, ``--batch_fail_validation``, ``--batch_max_enqueued_tokens``,
``--batch_stall_secs``), and each request answered by the same code as ``generateContent``
(implicit cache and markers included). This module holds what is Gemini's own, as the
``google-genai`` client calls it (key in ``x-goog-api-key``):

* ``POST /upload/v1beta/files`` — a resumable upload: the ``start`` call answers an
  ``X-Goog-Upload-URL``; the ``upload, finalize`` call to it stores the file (``files/ID``);
* ``GET /v1beta/files/{id}`` and ``GET /v1beta/files/{id}:download?alt=media``;
* ``POST /v1beta/models/{model}:batchGenerateContent`` — ``{"batch": {"displayName",
  "inputConfig": {"fileName": "files/ID"}}}`` (a JSONL file of ``{"key", "request"}``) or
  ``{"requests": {"requests": [{"request", "metadata": {"key"}}]}}`` (inlined);
* ``GET /v1beta/batches/{id}``, ``POST /v1beta/batches/{id}:cancel``, ``GET /v1beta/batches``
  (newest first, ``pageSize`` / ``pageToken``): the batch as an operation whose ``metadata``
  has ``state`` ``BATCH_STATE_PENDING`` / ``RUNNING`` / ``SUCCEEDED`` / ``FAILED`` /
  ``CANCELLED`` / ``EXPIRED`` and, once it ended, ``output.responsesFile`` (or
  ``output.inlinedResponses`` for inlined requests): one line per request that ran,
  ``{"key", "response"}`` or ``{"key", "error": <google.rpc.Status>}``; a request never run
  (cancelled, expired) has no line.

    client = genai.Client(api_key="test", http_options={"base_url": sim.root_url})
    uploaded = client.files.upload(file="requests.jsonl", config={"mime_type": "jsonl"})
    job = client.batches.create(model="gemini-2.5-flash", src=uploaded.name)
    client.batches.get(name=job.name).state          # JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED
    client.files.download(file=job.dest.file_name)   # the results JSONL
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from simulator.batch_files import BatchApiError
from simulator.batch_input import InputLine
from simulator.tokens import count_tokens

_STATES = {"validating": "BATCH_STATE_PENDING", "in_progress": "BATCH_STATE_RUNNING",
           "finalizing": "BATCH_STATE_RUNNING", "cancelling": "BATCH_STATE_RUNNING",
           "completed": "BATCH_STATE_SUCCEEDED", "failed": "BATCH_STATE_FAILED",
           "cancelled": "BATCH_STATE_CANCELLED", "expired": "BATCH_STATE_EXPIRED"}
_ENDED = frozenset({"completed", "failed", "cancelled", "expired"})
#: HTTP status → google.rpc.Code (the error of a result line).
_RPC = {400: (3, "INVALID_ARGUMENT"), 401: (16, "UNAUTHENTICATED"),
        403: (7, "PERMISSION_DENIED"), 404: (5, "NOT_FOUND"), 429: (8, "RESOURCE_EXHAUSTED"),
        500: (13, "INTERNAL"), 503: (14, "UNAVAILABLE"), 504: (4, "DEADLINE_EXCEEDED")}
#: The error of a line failed by --batch_p_line_fail.
LINE_FAILURE = {"error": {"code": 500, "message": "An internal error has occurred.",
                          "status": "INTERNAL"}}
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).isoformat(
        ).replace("+00:00", "Z")


def _line(number: int, key: Any, request: Any, model: str, default_max: int) -> InputLine:
    if not isinstance(key, str) or not key:
        raise BatchApiError(400, f"line {number}: 'key' must be a non-empty string.")
    if not isinstance(request, Mapping):
        raise BatchApiError(400, f"line {number}: 'request' must be a GenerateContentRequest.")
    out = (request.get("generationConfig") or {}).get("maxOutputTokens") or default_max
    text = json.dumps([request.get("systemInstruction"), request.get("contents")],
                      ensure_ascii=False)
    return InputLine(number, key, {"model": model, "request": dict(request)},
                     count_tokens(text) + int(out))


def parse_file(data: bytes, model: str, default_max: int) -> tuple[InputLine, ...]:
    """The requests of an input file: JSONL of ``{"key", "request"}``, keys unique.

    Raises:
        BatchApiError: 400 for a file Gemini refuses.
    """
    lines, seen = [], set()
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            raise BatchApiError(400, f"line {number} of the input file is not JSON.") from None
        if not isinstance(record, Mapping):
            raise BatchApiError(400, f"line {number} of the input file is not an object.")
        line = _line(number, record.get("key"), record.get("request"), model, default_max)
        if line.custom_id in seen:
            raise BatchApiError(400, f"line {number}: duplicate key '{line.custom_id}'.")
        seen.add(line.custom_id)
        lines.append(line)
    if not lines:
        raise BatchApiError(400, "The input file holds no request.")
    return tuple(lines)


def parse_inlined(requests: Any, model: str, default_max: int) -> tuple[InputLine, ...]:
    """The inlined requests ``[{"request", "metadata": {"key"}}]`` (a missing key: the index)."""
    if not isinstance(requests, list) or not requests:
        raise BatchApiError(400, "batch.input_config.requests: a non-empty list is required.")
    lines = []
    for i, item in enumerate(requests):
        item = item if isinstance(item, Mapping) else {}
        key = (item.get("metadata") or {}).get("key") or str(i)
        lines.append(_line(i + 1, key, item.get("request"), model, default_max))
    return tuple(lines)


def result_line(key: str, status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """One results line: the answer, or the error as a ``google.rpc.Status``."""
    if status == 200:
        return {"key": key, "response": dict(body)}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    code = _RPC.get(status, (13, "INTERNAL"))[0]
    return {"key": key, "error": {"code": code, "message": error.get("message") or "",
                                  "details": error.get("details") or []}}


def usage_tokens(body: Mapping[str, Any]) -> tuple[int, int]:
    """(input, output) tokens of an answer."""
    usage = body.get("usageMetadata") or {}
    return int(usage.get("promptTokenCount") or 0), int(usage.get("candidatesTokenCount") or 0)


def render(batch: Any, status: str, output_name: str | None) -> dict[str, Any]:
    """The batch as Gemini's operation (``metadata``: the ``GenerateContentBatch``).

    Args:
        batch: A ``simulator.batch._Batch`` of the ``gemini`` flavour.
        status: Its status in the store's (OpenAI's) words.
        output_name: Its results file (``files/ID``) once it ended, else None.
    """
    epoch = batch.epoch
    ended = status in _ENDED
    end = batch.cancel_at + batch.cancel_secs if batch.cancel_at is not None else (
        batch.t_valid if batch.errors else batch.t_end)
    name = f"batches/{batch.id}"
    total = batch.total if batch.finalized else len(batch.lines)
    meta: dict[str, Any] = {
        "@type": _TYPE, "name": name, "model": f"models/{batch.model}",
        "displayName": (batch.metadata or {}).get("displayName", ""),
        "createTime": _rfc3339(epoch(batch.t0)),
        "updateTime": _rfc3339(epoch(end) if ended else epoch(batch.t0)),
        "state": _STATES[status],
        "batchStats": {"requestCount": str(total),
                       "successfulRequestCount": str(batch.completed),
                       "failedRequestCount": str(batch.failed),
                       "pendingRequestCount": str(0 if ended else
                                                  total - batch.completed - batch.failed)}}
    if ended:
        meta["endTime"] = _rfc3339(epoch(end))
        if batch.inlined and batch.inlined_responses is not None:
            meta["output"] = {"inlinedResponses": {"inlinedResponses": batch.inlined_responses}}
        elif output_name:
            meta["output"] = {"responsesFile": output_name}
    body: dict[str, Any] = {"name": name, "metadata": meta, "done": ended}
    if batch.errors and ended:
        body["error"] = {"code": 3, "message": batch.errors[0].get("message", "")}
    return body


class GeminiBatchRoutes:
    """The Files API and batch handlers over the simulator's ``BatchStore``.

    Args:
        store: The files and batches (``create_gemini`` and the ``gemini`` flavour).
        gemini: The ``GeminiRoutes`` (their key check and error bodies).
        stall: The Batch API's ``--batch_stall_secs`` wait (after the batch exists).
        catch_up: Answers the due lines of one batch (or all), yielding between chunks.
    """

    def __init__(self, store: Any, gemini: Any, stall: Any, catch_up: Any):
        self.store = store
        self._gemini = gemini
        self._stall = stall
        self._catch_up = catch_up
        self._uploads: dict[str, dict[str, Any]] = {}
        self._upload_ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        """Registers the endpoints on ``app`` (before any catch-all route)."""
        router = app.router
        router.add_post("/upload/v1beta/files", self._wrap(self.upload, key=False))
        router.add_get("/v1beta/files/{file:[^/:]+}:download", self._wrap(self.download))
        router.add_get("/v1beta/files/{file:[^/:]+}", self._wrap(self.get_file))
        router.add_post("/v1beta/models/{model:[^/:]+}:batchGenerateContent",
                        self._wrap(self.create))
        router.add_get("/v1beta/batches", self._wrap(self.list))
        router.add_get("/v1beta/batches/{batch:[^/:]+}", self._wrap(self.get))
        router.add_post("/v1beta/batches/{batch:[^/:]+}:cancel", self._wrap(self.cancel))

    def _wrap(self, handler, key: bool = True):
        async def handle(request: web.Request) -> web.StreamResponse:
            # An upload's second call is authorized by its upload_id, as at Google.
            if key or "upload_id" not in request.query:
                refused = self._gemini._check_key(request)  # noqa: SLF001 - one key check
                if refused is not None:
                    return refused
            try:
                return await handler(request)
            except BatchApiError as exc:
                return self._gemini._error(exc.status, exc.message)  # noqa: SLF001
        return handle

    # ---- files -------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /upload/v1beta/files``: ``start`` (metadata) then ``upload, finalize``."""
        command = request.headers.get("X-Goog-Upload-Command", "")
        upload_id = request.query.get("upload_id")
        if upload_id is None:
            if "start" not in command:
                raise BatchApiError(400, "Only resumable uploads are supported here.")
            try:
                meta = (json.loads(await request.read() or b"{}").get("file") or {})
            except (ValueError, AttributeError):
                raise BatchApiError(400, "Invalid JSON payload received.") from None
            upload_id = str(next(self._upload_ids))
            self._uploads[upload_id] = {"meta": meta, "data": bytearray()}
            url = f"{request.url.origin()}/upload/v1beta/files?upload_id={upload_id}" \
                  "&upload_protocol=resumable"
            return web.Response(headers={"X-Goog-Upload-URL": url,
                                         "X-Goog-Upload-Status": "active"})
        pending = self._uploads.get(upload_id)
        if pending is None:
            raise BatchApiError(404, f"No upload {upload_id}.")
        pending["data"] += await request.read()
        if "finalize" not in command:
            return web.Response(headers={"X-Goog-Upload-Status": "active"})
        del self._uploads[upload_id]
        meta = pending["meta"]
        stored = self.store.files.add(bytes(pending["data"]), meta.get("displayName") or "",
                                      "gemini_upload", int(self.store.wall()))
        self.store.count_upload()
        await self._stall()
        return web.json_response({"file": self._file(stored, meta.get("mimeType"))},
                                 headers={"X-Goog-Upload-Status": "final"})

    @staticmethod
    def _file(stored: Any, mime: str | None = None) -> dict[str, Any]:
        return {"name": f"files/{stored.id}", "displayName": stored.filename,
                "mimeType": mime or "application/jsonl", "sizeBytes": str(len(stored.data)),
                "createTime": _rfc3339(stored.created_at), "state": "ACTIVE",
                "source": "GENERATED" if stored.purpose == "batch_output" else "UPLOADED"}

    async def get_file(self, request: web.Request) -> web.Response:
        """``GET /v1beta/files/{id}``."""
        return web.json_response(self._file(self.store.files.get(request.match_info["file"])))

    async def download(self, request: web.Request) -> web.Response:
        """``GET /v1beta/files/{id}:download?alt=media``: the file's bytes."""
        stored = self.store.files.get(request.match_info["file"])
        return web.Response(body=stored.data, content_type="application/jsonl")

    # ---- batches -----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1beta/models/{model}:batchGenerateContent``."""
        try:
            params = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise BatchApiError(400, "Invalid JSON payload received.") from None
        batch = params.get("batch") if isinstance(params, Mapping) else None
        if not isinstance(batch, Mapping) or not isinstance(batch.get("inputConfig"), Mapping):
            raise BatchApiError(400, "batch.input_config is required.")
        model = request.match_info["model"].removeprefix("models/")
        created = self.store.create_gemini(model, batch["inputConfig"],
                                           str(batch.get("displayName") or ""))
        await self._stall()
        return web.json_response(created)

    async def get(self, request: web.Request) -> web.Response:
        """``GET /v1beta/batches/{id}``."""
        batch_id = request.match_info["batch"]
        await self._catch_up(batch_id)
        return web.json_response(self.store.retrieve(batch_id, flavor="gemini"))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1beta/batches/{id}:cancel``: an empty answer, as Google's."""
        batch_id = request.match_info["batch"]
        await self._catch_up(batch_id)
        self.store.cancel(batch_id, flavor="gemini")
        return web.json_response({})

    async def list(self, request: web.Request) -> web.Response:
        """``GET /v1beta/batches``: newest first; ``pageSize`` (1-1000), ``pageToken``."""
        try:
            size = int(request.query.get("pageSize", "50"))
        except ValueError:
            size = 0
        if not 1 <= size <= 1000:
            raise BatchApiError(400, "pageSize must be between 1 and 1000.")
        await self._catch_up()
        token = request.query.get("pageToken") or None
        listed = self.store.list(token.removeprefix("batches/") if token else None, size,
                                 flavor="gemini")
        body: dict[str, Any] = {"operations": listed["data"]}
        if listed.get("has_more") and listed["data"]:
            body["nextPageToken"] = listed["data"][-1]["name"]
        return web.json_response(body)
