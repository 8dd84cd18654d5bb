"""The provider's Files and Batches API through the ``openai`` sync client, with typed errors.

:class:`BatchClient` is what the driver of ``--api batch`` talks to: upload a request file,
create a batch (tagged with metadata), retrieve, cancel, find a batch again by LISTING (newest
first, every page) and download an output or error file. Every SDK error is mapped once to our
typed errors (:func:`transforms.llm.providers.openai.from_openai`; the key is redacted).

Retries: the SDK's are off. Calls without side effects (retrieve, list, download, cancel — the
latter is idempotent) and uploads (a second upload leaves at worst an unused, free file) are
retried here on retryable errors with the run's policy (``--max_retries``, backoff, retry-after),
because a job that waits hours must not end on one 503 while polling. ``create`` is NEVER
retried here: after a timeout it may have created the batch, and a second one would be paid
twice; the driver first looks for it by listing (:meth:`BatchClient.find`).

Example::

    client = BatchClient(base_url, api_key)
    file_id = client.upload("out/batch/JOB/round-1/requests-00000-of-00001.jsonl", "part.jsonl")
    info = client.create(file_id, {"ticketflow_job": "JOB", "part": "00000", "round": "1"})
    info = client.retrieve(info.id)        # BatchInfo(status="in_progress", ...)
    client.download(info.output_file_id, "out/batch/JOB/round-1/output-00000.jsonl")
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple, TypeVar

import openai
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import errors
from transforms.llm.providers import openai as wire
from transforms.retry import RetryPolicy

#: Statuses after which a batch never changes again.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
COMPLETION_WINDOW = "24h"
_LIST_PAGE = 100
# A batch created just before a crash was created after the journal said "creating"; this much
# clock skew between us and the provider is tolerated when deciding where listing may stop.
_LIST_SKEW_SECS = 600

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """What the driver needs of a provider's ``Batch`` object.

    Attributes:
      errors: ``(code, message)`` of a batch that failed validation (e.g. token_limit_exceeded).
    """
    id: str
    status: str
    created_at: float = 0.0
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    metadata: Optional[Dict[str, str]] = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: Tuple[Tuple[str, str], ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, batch: Any) -> "BatchInfo":
        counts = getattr(batch, "request_counts", None)
        listed = getattr(getattr(batch, "errors", None), "data", None) or []
        return cls(
            id=batch.id, status=batch.status, created_at=float(batch.created_at or 0),
            output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
            metadata=dict(batch.metadata or {}),
            total=int(getattr(counts, "total", 0) or 0),
            completed=int(getattr(counts, "completed", 0) or 0),
            failed=int(getattr(counts, "failed", 0) or 0),
            errors=tuple((e.code or "", errors.redact(e.message or "")[:500]) for e in listed))


class RetriedCalls:
    """Typed errors and the retry rule of the module docstring, for any provider's batch client.

    A subclass sets ``_map`` (an SDK exception and the secrets → our typed error).

    Args:
      api_key: The resolved key (kept in memory only, redacted from every message).
      retry: Retries of the calls that may be retried.
      sleep: Blocking sleep between retries (tests pass a recorder).
      rng: Jitter.
    """

    def __init__(self, api_key: str, retry: Optional[RetryPolicy],
                 sleep: Callable[[float], None], rng: Optional[random.Random]):
        self._key = api_key
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _map(self, exc: BaseException) -> errors.ProviderError:
        raise NotImplementedError

    def _once(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise self._map(exc) from None

    def _retried(self, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(call)
            except errors.RetryableError as exc:
                if attempt > self._retry.max_retries:
                    raise
                self._sleep(self._retry.backoff(attempt, self._rng, exc.retry_after))


class BatchClient(RetriedCalls):
    """Files and Batches API calls, typed errors, the retry rule above.

    What the driver (:mod:`pipeline.batch.driver`) asks of a provider's batch client:
    ``uploads`` (a request file is uploaded first, and ``create`` names the upload; else
    ``create`` is given the file's path and sends its lines), ``upload``, ``create``,
    ``retrieve``, ``cancel``, ``find`` (a creation in doubt), ``download`` (a finished batch's
    answers to a local or gs:// file) and ``classify_line`` (one downloaded line → a
    :class:`~transforms.llm.providers.LineOutcome`).
    :class:`~transforms.llm.providers.anthropic_batch.AnthropicBatchClient` is the other one.

    Args:
      base_url: The endpoint (None: OpenAI's).
      api_key: The resolved key (kept in memory only, redacted from every message).
      timeout: Seconds per HTTP request (uploads and downloads of 200 MB files need minutes).
      retry: Retries of the calls that may be retried (see the module docstring).
      sleep: Blocking sleep between retries (tests pass a recorder).
      rng: Jitter.
    """

    uploads = True
    classify_line = staticmethod(wire.classify_line)

    def __init__(self, base_url: Optional[str], api_key: str, *, timeout: float = 600.0,
                 retry: Optional[RetryPolicy] = None, sleep: Callable[[float], None] = time.sleep,
                 rng: Optional[random.Random] = None):
        super().__init__(api_key, retry, sleep, rng)
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0,
                                     timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _map(self, exc: BaseException) -> errors.ProviderError:
        return wire.from_openai(exc, [self._key])

    def upload(self, path: str, filename: str) -> str:
        """Uploads a request file (local or gs://, streamed) with purpose ``batch``.

        Returns:
          The file's id.
        """
        def call() -> str:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                return self._client.files.create(file=(filename, fh), purpose="batch").id
        return self._retried(call)

    def create(self, file_id: str, metadata: Mapping[str, str]) -> BatchInfo:
        """Creates a batch of the uploaded file (never retried: see the module docstring)."""
        return BatchInfo.of(self._once(lambda: self._client.batches.create(
            input_file_id=file_id, endpoint=wire.BATCH_ENDPOINT,
            completion_window=COMPLETION_WINDOW, metadata=dict(metadata))))

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.of(self._retried(lambda: self._client.batches.retrieve(batch_id)))

    def cancel(self, batch_id: str) -> BatchInfo:
        """Asks the provider to cancel; a batch that already ended is returned as it is."""
        try:
            return BatchInfo.of(self._retried(lambda: self._client.batches.cancel(batch_id)))
        except errors.BadRequest:
            return self.retrieve(batch_id)

    def find(self, metadata: Mapping[str, str], created_after: float, *, lines: int = 0,
             claimed: Collection[str] = ()) -> Optional[BatchInfo]:
        """The newest batch whose metadata holds every pair of ``metadata``, by listing.

        Pages are read newest first until one holds only batches created well before
        ``created_after`` (epoch seconds; the journal's time of the "creating" event).
        ``lines`` and ``claimed`` are for providers without batch metadata (unused here).
        """
        del lines, claimed
        after: Optional[str] = None
        while True:
            kwargs = {"limit": _LIST_PAGE} if after is None else {"limit": _LIST_PAGE,
                                                                  "after": after}
            page = self._retried(lambda kw=kwargs: self._client.batches.list(**kw))
            data = list(page.data)
            for batch in data:
                have = batch.metadata or {}
                if all(have.get(k) == v for k, v in metadata.items()):
                    return BatchInfo.of(batch)
            if not data or not page.has_more:
                return None
            if all(float(b.created_at or 0) < created_after - _LIST_SKEW_SECS for b in data):
                return None
            after = data[-1].id

    def download(self, file_id: str, dest: str) -> int:
        """Streams a file's content to ``dest`` (local or gs://); returns the bytes written."""
        def call() -> int:
            written = 0
            with self._client.files.with_streaming_response.content(file_id) as response, \
                    FileSystems.create(dest, mime_type="application/jsonl") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
            return written
        return self._retried(call)
