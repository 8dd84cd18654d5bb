"""Gemini's batch mode: the request line, the result classification, the client.

``--api batch --provider gemini`` runs the one batch driver (:mod:`pipeline.batch.driver`) on
this module, through the official ``google-genai`` client (its retries off). What is Gemini's
own, and where it is handled here:

* a part is a JSONL file uploaded through the Files API (``client.files.upload``: a resumable
  ``POST /upload/v1beta/files``), one line per request ``{"key": custom_id, "request":
  <generateContent body>}`` (:func:`batch_request_line`: the same body as online); the batch is
  ``client.batches.create(model=..., src="files/...")`` (``POST /v1beta/models/{model}:
  batchGenerateContent``). Inlined requests (under 20 MB) are not used: they go through the
  SDK's typed request objects, while the file carries the REST body exactly as online;
* ``state`` ``JOB_STATE_PENDING`` / ``RUNNING`` (in progress), ``SUCCEEDED``, ``FAILED``,
  ``CANCELLED``, ``EXPIRED``, read as the driver's statuses (:meth:`GeminiBatchClient.info`);
  a finished batch's results are a file (``dest.file_name``, ``client.files.download``:
  ``GET /v1beta/files/{name}:download?alt=media``);
* one result line per request that ran (:func:`classify_line`): ``{"key", "response"}`` → ok
  (usage with ``cachedContentTokenCount``), ``{"key", "error"}`` (a ``google.rpc.Status``) →
  permanent for ``INVALID_ARGUMENT`` and the like, retryable for ``RESOURCE_EXHAUSTED``,
  ``UNAVAILABLE``, ``INTERNAL``, ``DEADLINE_EXCEEDED``; a request with no line (a cancelled or
  expired batch) is retryable (the driver's ``missing_from_output``);
* no batch metadata: the part's tags are the batch's ``displayName``
  (``ticketflow-JOB-PART-rROUND-aATTEMPT``), and a creation in doubt is found again by listing
  (``client.batches.list``) for that name.

Example::

    client = GeminiBatchClient(base_url, api_key, model="gemini-2.5-flash")
    name = client.upload("out/batch/JOB/round-1/requests-00000-of-00001.jsonl", "part.jsonl")
    info = client.create(name, {"ticketflow_job": "JOB", ...})   # BatchInfo(status=...)
    client.download(info.output_file_id, "out/batch/JOB/round-1/output-00000.jsonl")
"""

from __future__ import annotations

import io
import json
import random
import time
from typing import Any, Callable, Collection, Dict, Mapping, Optional

import orjson
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import errors
from transforms.llm.providers import OK, PERMANENT, RETRYABLE, LineOutcome
from transforms.llm.providers import gemini as wire
from transforms.llm.providers.openai_batch import BatchInfo, RetriedCalls
from transforms.retry import RetryPolicy

#: Our limits for one part (Gemini takes input files up to 2 GB; a part stays small enough to
#: be retried and downloaded again cheaply).
MAX_LINES = 50_000
MAX_BYTES = 200_000_000
PROVIDER = "gemini"
#: ``google.rpc.Code`` numbers → (name, the HTTP status it stands for online).
RPC_CODES = {1: ("CANCELLED", 499), 2: ("UNKNOWN", 500), 3: ("INVALID_ARGUMENT", 400),
             4: ("DEADLINE_EXCEEDED", 504), 5: ("NOT_FOUND", 404), 6: ("ALREADY_EXISTS", 409),
             7: ("PERMISSION_DENIED", 403), 8: ("RESOURCE_EXHAUSTED", 429),
             9: ("FAILED_PRECONDITION", 400), 10: ("ABORTED", 409), 11: ("OUT_OF_RANGE", 400),
             12: ("UNIMPLEMENTED", 501), 13: ("INTERNAL", 500), 14: ("UNAVAILABLE", 503),
             15: ("DATA_LOSS", 500), 16: ("UNAUTHENTICATED", 401)}
_HTTP = {name: status for name, status in RPC_CODES.values()}
#: The SDK's job states, in the driver's (OpenAI's) words.
STATES = {"JOB_STATE_PENDING": "validating", "JOB_STATE_QUEUED": "validating",
          "JOB_STATE_RUNNING": "in_progress", "JOB_STATE_SUCCEEDED": "completed",
          "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled",
          "JOB_STATE_CANCELLING": "cancelling", "JOB_STATE_EXPIRED": "expired"}
_LIST_PAGE = 100
_LIST_SKEW_SECS = 600


def batch_request_line(custom_id: str, params: Mapping[str, Any], config: Any = None) -> str:
    """One line of a batch's input file (JSON, no newline): ``key`` and the ``generateContent``
    body built as online from the pipeline's request ``params``."""
    del config
    return json.dumps({"key": custom_id, "request": wire.generate_body(params)},
                      ensure_ascii=False, separators=(",", ":"))


def rpc_status(error: Mapping[str, Any]) -> tuple:
    """(code name, HTTP status) of a ``google.rpc.Status`` (numeric ``code``) or of Google's
    HTTP error body (``code`` an HTTP status, ``status`` the name)."""
    name = error.get("status") if isinstance(error.get("status"), str) else None
    code = error.get("code")
    if isinstance(code, int) and code in RPC_CODES and name is None:
        return RPC_CODES[code]
    if isinstance(code, int) and code >= 400:
        return name, code
    return name, _HTTP.get(name or "", 500)  # unknown: the provider's fault


def _completion(response: Any) -> Dict[str, Any]:
    """The parts of an answered line we keep (raises ValueError if not an answer)."""
    c = wire.parse_response(orjson.dumps(response))
    if not c.usage_known:
        raise ValueError("a response without usageMetadata")
    return {"content": c.content, "model": c.model, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "cached_tokens": c.cached_tokens}


def classify_line(record: Mapping[str, Any]) -> LineOutcome:
    """Classifies one line of a batch's result file.

    Raises:
      ValueError: the line has no string ``key`` (it cannot be mapped to a request).
    """
    cid = record.get("key")
    if not isinstance(cid, str) or not cid:
        raise ValueError("a batch result line without key")  # noqa: TRY004 - bad data
    response = record.get("response")
    if isinstance(response, Mapping) and not isinstance(record.get("error"), Mapping):
        request_id = response.get("responseId")
        try:
            return LineOutcome(cid, OK, 200, completion=_completion(response),
                               request_id=request_id, provider=PROVIDER)
        except (KeyError, TypeError, ValueError, AttributeError):
            return LineOutcome(cid, RETRYABLE, 200, "malformed_response",
                               "an answered line whose response is not an answer",
                               request_id=request_id, provider=PROVIDER)
    error = record.get("error") if isinstance(record.get("error"), Mapping) else {}
    name, status = rpc_status(error)
    message = errors.redact(str(error.get("message") or f"batch line failed ({name})"))[:500]
    cls = wire.error_for(status, name, message)
    return LineOutcome(cid, RETRYABLE if cls.retryable else PERMANENT, status,
                       name or "UNKNOWN", message, provider=PROVIDER)


def display_name(metadata: Mapping[str, str]) -> str:
    """The batch's ``displayName``: the part's tags (Gemini keeps no metadata)."""
    return "ticketflow-{}-{}-r{}-a{}".format(
        metadata.get("ticketflow_job", ""), metadata.get("ticketflow_part", ""),
        metadata.get("ticketflow_round", ""), metadata.get("ticketflow_attempt", ""))


def _epoch(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value or 0)


class GeminiBatchClient(RetriedCalls):
    """Files and batch calls through the ``google-genai`` sync client (its retries off), typed
    errors, the retry rule of :mod:`transforms.llm.providers.openai_batch` (``create`` is never
    retried).

    Args:
      base_url: The endpoint (its root, ``/v1beta`` or not; None: Google's).
      api_key: The resolved key (kept in memory only, redacted from every message).
      model: The model every batch of the run uses.
      timeout: Seconds per HTTP request (a 200 MB upload or download needs minutes).
      retry: Retries of the calls that may be retried.
      sleep: Blocking sleep between retries (tests pass a recorder).
      rng: Jitter.
    """

    uploads = True
    classify_line = staticmethod(classify_line)

    def __init__(self, base_url: Optional[str], api_key: str, *, model: str,
                 timeout: float = 600.0, retry: Optional[RetryPolicy] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None):
        from google import genai  # pylint: disable=import-outside-toplevel
        from google.genai import types  # pylint: disable=import-outside-toplevel

        super().__init__(api_key, retry, sleep, rng)
        self._model = model
        options = types.HttpOptions(
            base_url=wire._root(base_url), api_version=wire.API_VERSION,  # noqa: SLF001
            timeout=int(timeout * 1000), retry_options=types.HttpRetryOptions(attempts=1))
        self._client = genai.Client(api_key=api_key, http_options=options)

    def close(self) -> None:
        self._client.close()

    def _map(self, exc: BaseException) -> errors.ProviderError:
        return wire.from_genai(exc, [self._key])

    @staticmethod
    def info(job: Any) -> BatchInfo:
        """A ``BatchJob`` in the driver's words; its result file stands for the output file."""
        state = getattr(job.state, "value", job.state)
        status = STATES.get(str(state), "in_progress")
        dest = job.dest
        output = dest.file_name if dest is not None and status in (
            "completed", "cancelled", "expired") else None
        error = getattr(job, "error", None)
        listed = ((str(getattr(error, "code", "") or ""),
                   errors.redact(str(getattr(error, "message", "") or ""))[:500]),
                  ) if error is not None else ()
        return BatchInfo(id=job.name, status=status, created_at=_epoch(job.create_time),
                         output_file_id=output, metadata={"display_name": job.display_name or ""},
                         errors=listed)

    def upload(self, path: str, filename: str) -> str:
        """Uploads a request file (local or gs://) through the Files API; returns its name."""
        def call() -> str:
            config = {"mime_type": "application/jsonl", "display_name": filename}
            if "://" not in path:
                return self._client.files.upload(file=path, config=config).name
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                data = io.BytesIO(fh.read())  # the SDK needs a seekable stream
            return self._client.files.upload(file=data, config=config).name
        return self._retried(call)

    def create(self, file_name: str, metadata: Mapping[str, str]) -> BatchInfo:
        """Creates a batch of the uploaded file, named by the part's tags (never retried)."""
        return self.info(self._once(lambda: self._client.batches.create(
            model=self._model, src=file_name,
            config={"display_name": display_name(metadata)})))

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self.info(self._retried(lambda: self._client.batches.get(name=batch_id)))

    def cancel(self, batch_id: str) -> BatchInfo:
        """Asks Gemini to cancel; a batch that already ended is returned as it is."""
        try:
            self._retried(lambda: self._client.batches.cancel(name=batch_id))
        except errors.BadRequest:
            pass
        return self.retrieve(batch_id)

    def find(self, metadata: Mapping[str, str], created_after: float, *, lines: int = 0,
             claimed: Collection[str] = ()) -> Optional[BatchInfo]:
        """The batch whose ``displayName`` holds the part's tags, by listing page by page until
        a page holds only batches created well before ``created_after``."""
        del lines
        wanted = display_name(metadata)
        pager = self._retried(lambda: self._client.batches.list(
            config={"page_size": _LIST_PAGE}))
        while True:
            data = list(pager.page)
            for job in data:
                if job.display_name == wanted and job.name not in claimed:
                    return self.info(job)
            if not data or all(_epoch(j.create_time) < created_after - _LIST_SKEW_SECS
                               for j in data):
                return None
            if not pager.config.get("page_token"):
                return None
            self._retried(pager.next_page)

    def download(self, file_id: str, dest: str) -> int:
        """Streams a batch's result file to ``dest`` (local or gs://); returns its bytes."""
        def call() -> int:
            with FileSystems.create(dest, mime_type="application/jsonl",
                                    compression_type=CompressionTypes.UNCOMPRESSED) as out:
                counted = _Counting(out)
                self._client.files.download(file=file_id, destination=counted)
            return counted.written
        return self._retried(call)


class _Counting(io.RawIOBase):
    """A writable stream that counts what it passes on (the SDK streams into an ``IOBase``)."""

    def __init__(self, out: Any):
        super().__init__()
        self._out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._out.write(data)
        self.written += len(data)
        return len(data)
