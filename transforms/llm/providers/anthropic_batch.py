"""Anthropic's Message Batches API: the request line, the result classification, the client.

``--api batch --provider anthropic`` runs the one batch driver (:mod:`pipeline.batch.driver`)
on this module instead of OpenAI's Files and Batches (:mod:`transforms.llm.providers.
openai_batch`). What differs, and where it is handled here:

* no upload: a part's lines are the ``requests`` of ``client.messages.batches.create`` (at most
  :data:`MAX_LINES` requests and :data:`MAX_BYTES` per batch; the pack pipeline cuts the parts
  at those limits), so :attr:`AnthropicBatchClient.uploads` is False and ``create`` reads the
  part's file;
* one request line is ``{"custom_id": ..., "params": <messages_body>}``
  (:func:`batch_request_line`): the same body as online, prompt caching included (a batch runs
  for minutes to hours: ``--cache_ttl 1h`` keeps its prefix cached between its requests);
* ``processing_status`` ``in_progress`` / ``canceling`` / ``ended``, read as the driver's
  statuses (:meth:`AnthropicBatchClient.info`); an ended batch's results stream from
  ``results(id)`` (its id stands for the "output file");
* one result line per request (:func:`classify_line`): ``succeeded`` → ok (usage with the cache
  reads and writes), ``errored`` → permanent or retryable by its error type, as online
  (``invalid_request_error`` permanent; ``api_error``, ``overloaded_error``,
  ``rate_limit_error`` retryable), ``canceled`` / ``expired`` → retryable (never run);
* no batch metadata: a creation in doubt is found again by listing (:meth:`AnthropicBatchClient.
  find`): a batch created since the journal's "creating", with the part's number of requests,
  that no other part of the job already owns.

Example::

    client = AnthropicBatchClient(base_url, api_key)
    info = client.create("out/batch/JOB/round-1/requests-00000-of-00001.jsonl", {})
    info = client.retrieve(info.id)              # BatchInfo(status="in_progress", ...)
    client.download(info.output_file_id, "out/batch/JOB/round-1/output-00000.jsonl")
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable, Collection, Dict, Mapping, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import errors
from transforms.llm.providers import OK, PERMANENT, RETRYABLE, LineOutcome
from transforms.llm.providers import anthropic as wire
from transforms.llm.providers.openai_batch import BatchInfo, RetriedCalls
from transforms.retry import RetryPolicy

#: Anthropic's limits for one message batch.
MAX_LINES = 100_000
MAX_BYTES = 256_000_000
#: Anthropic's error types, as the HTTP status each stands for online.
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "billing_error": 402, "permission_error": 403, "not_found_error": 404,
                "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                "timeout_error": 504, "overloaded_error": 529}
#: Result types of requests the batch never ran, as the codes the batch layer knows.
_NOT_RUN = {"canceled": "batch_cancelled", "expired": "batch_expired"}
_LIST_PAGE = 100
_LIST_SKEW_SECS = 600
PROVIDER = "anthropic"


def batch_request_line(custom_id: str, params: Mapping[str, Any], config: Any = None) -> str:
    """One request of a message batch (JSON, no newline): ``custom_id`` and the Messages API
    ``params`` built as online (``config``: the ``LlmConfig``'s prompt cache and TTL)."""
    body = wire.messages_body(params, cache=getattr(config, "prompt_cache", True),
                              cache_ttl=getattr(config, "cache_ttl", "5m"))
    return json.dumps({"custom_id": custom_id, "params": body}, ensure_ascii=False,
                      separators=(",", ":"))


def _completion(message: Any) -> Dict[str, Any]:
    """The parts of a succeeded line's message we keep (raises ValueError if not a message)."""
    c = wire.parse_message(json.dumps(message).encode("utf-8"))
    if not c.usage_known:
        raise ValueError("a message without usage")
    usage = message.get("usage") or {}
    return {"content": c.content, "model": c.model, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "cached_tokens": c.cached_tokens,
            "cache_read_input_tokens": int(usage.get("cache_read_input_tokens") or 0),
            "cache_creation_input_tokens": int(usage.get("cache_creation_input_tokens") or 0)}


def classify_line(record: Mapping[str, Any]) -> LineOutcome:
    """Classifies one line of a message batch's results.

    Raises:
      ValueError: the line has no string ``custom_id`` (it cannot be mapped to a request).
    """
    cid = record.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError("a batch result line without custom_id")  # noqa: TRY004 - bad data
    result = record.get("result") if isinstance(record.get("result"), Mapping) else {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        request_id = message.get("id") if isinstance(message, Mapping) else None
        try:
            return LineOutcome(cid, OK, 200, completion=_completion(message),
                               request_id=request_id, provider=PROVIDER)
        except (KeyError, TypeError, ValueError, AttributeError):
            return LineOutcome(cid, RETRYABLE, 200, "malformed_response",
                               "a succeeded line whose message is not a message",
                               request_id=request_id, provider=PROVIDER)
    if kind == "errored":
        body = result.get("error") if isinstance(result.get("error"), Mapping) else {}
        error = body.get("error") if isinstance(body.get("error"), Mapping) else body
        code = error.get("type") if isinstance(error.get("type"), str) else "api_error"
        message = errors.redact(str(error.get("message") or ""))[:500]
        status = ERROR_STATUS.get(code, 500)  # an unknown type: the provider's fault
        cls = wire.error_for(status, code, message)
        return LineOutcome(cid, RETRYABLE if cls.retryable else PERMANENT, status, code, message,
                           request_id=body.get("request_id"), provider=PROVIDER)
    code = _NOT_RUN.get(kind, "batch_line_failed")
    # A request never run (canceled, expired) or an unknown result: worth another round.
    return LineOutcome(cid, RETRYABLE, None, code, f"the batch's result is {kind!r}",
                       provider=PROVIDER)


def _epoch(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value or 0)


class AnthropicBatchClient(RetriedCalls):
    """Message Batches calls through the ``anthropic`` sync client, typed errors, the retry rule
    of :mod:`transforms.llm.providers.openai_batch` (``create`` is never retried).

    Args:
      base_url: The endpoint (``/v1`` or not; None: Anthropic's).
      api_key: The resolved key (kept in memory only, redacted from every message).
      timeout: Seconds per HTTP request (a 256 MB create or results stream needs minutes).
      retry: Retries of the calls that may be retried.
      sleep: Blocking sleep between retries (tests pass a recorder).
      rng: Jitter.
    """

    uploads = False
    classify_line = staticmethod(classify_line)

    def __init__(self, base_url: Optional[str], api_key: str, *, timeout: float = 600.0,
                 retry: Optional[RetryPolicy] = None, sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None):
        import anthropic  # pylint: disable=import-outside-toplevel

        super().__init__(api_key, retry, sleep, rng)
        base = base_url.rstrip("/") if base_url else None
        if base and base.endswith("/v1"):
            base = base[:-3]
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base, max_retries=0,
                                           timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _map(self, exc: BaseException) -> errors.ProviderError:
        return wire.from_anthropic(exc, [self._key])

    @staticmethod
    def info(batch: Any) -> BatchInfo:
        """A ``MessageBatch`` in the driver's words: ``in_progress``, ``cancelling``, or once
        ended ``cancelled`` (a cancel was asked), ``expired`` (some requests expired) or
        ``completed``; its results stand in for the output file (``output_file_id``: its id)."""
        counts = batch.request_counts
        status = {"in_progress": "in_progress", "canceling": "cancelling"}.get(
            batch.processing_status)
        if status is None:
            status = ("cancelled" if batch.cancel_initiated_at else
                      "expired" if counts.expired else "completed")
        ended = batch.processing_status == "ended"
        return BatchInfo(
            id=batch.id, status=status, created_at=_epoch(batch.created_at),
            output_file_id=batch.id if ended else None,
            total=int(counts.processing + counts.succeeded + counts.errored + counts.canceled
                      + counts.expired),
            completed=int(counts.succeeded),
            failed=int(counts.errored + counts.canceled + counts.expired))

    def upload(self, path: str, filename: str) -> str:
        raise NotImplementedError("Message Batches take their requests in create()")

    def create(self, path: str, metadata: Mapping[str, str]) -> BatchInfo:
        """Creates a message batch of the part's requests (never retried; Anthropic keeps no
        metadata: ``metadata`` is unused, and :meth:`find` looks by time and size)."""
        del metadata
        requests = []
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            for line in raw.read().decode("utf-8").split("\n"):
                if line.strip():
                    record = json.loads(line)
                    requests.append({"custom_id": record["custom_id"],
                                     "params": record["params"]})
        return self.info(self._once(lambda: self._client.messages.batches.create(
            requests=requests)))

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self.info(self._retried(
            lambda: self._client.messages.batches.retrieve(batch_id)))

    def cancel(self, batch_id: str) -> BatchInfo:
        """Asks Anthropic to cancel; a batch that already ended is returned as it is."""
        try:
            return self.info(self._retried(
                lambda: self._client.messages.batches.cancel(batch_id)))
        except errors.BadRequest:
            return self.retrieve(batch_id)

    def find(self, metadata: Mapping[str, str], created_after: float, *, lines: int = 0,
             claimed: Collection[str] = ()) -> Optional[BatchInfo]:
        """The oldest batch created since ``created_after`` (less a clock skew) with ``lines``
        requests whose id is not in ``claimed`` (the job's other batches), by listing newest
        first until the batches are older than that."""
        del metadata
        after: Optional[str] = None
        found = None
        while True:
            kwargs: Dict[str, Any] = {"limit": _LIST_PAGE}
            if after is not None:
                kwargs["after_id"] = after
            page = self._retried(
                lambda kw=kwargs: self._client.messages.batches.list(**kw))
            data = list(page.data)
            for batch in data:
                info = self.info(batch)
                if info.created_at < created_after - _LIST_SKEW_SECS:
                    return found
                if info.id not in claimed and (not lines or info.total == lines):
                    found = info
            if not data or not page.has_more:
                return found
            after = data[-1].id

    def download(self, file_id: str, dest: str) -> int:
        """Streams an ended batch's results (``file_id``: the batch's id) to ``dest`` as JSONL;
        returns the bytes written."""
        def call() -> int:
            written = 0
            with FileSystems.create(dest, mime_type="application/jsonl") as out:
                for item in self._client.messages.batches.results(file_id):
                    data = (json.dumps(item.to_dict(mode="json"), ensure_ascii=False,
                                       separators=(",", ":")) + "\n").encode("utf-8")
                    out.write(data)
                    written += len(data)
            return written
        return self._retried(call)
