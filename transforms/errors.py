"""Typed provider errors, split by retryability, whatever the provider.

Each provider module maps its SDK's exceptions and its statuses to these at the client boundary
only (:func:`transforms.llm.providers.openai.from_openai`); everything downstream (retry
decision, dead-letter reason, metrics) looks at these types. Messages are redacted so that an
API key never travels inside an error.

Example::

    try:
        await client.chat.completions.create(...)
    except openai.OpenAIError as exc:
        raise from_openai(exc, secrets=[api_key]) from None
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

# Anything that looks like an OpenAI-style key, in case a provider echoes one back.
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9_\-\.]{6,})")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Removes secrets and key-shaped strings from ``text``.

    Args:
      text: Any message that may leave the process (log line, dead letter, exception).
      secrets: Exact strings to remove (e.g. the configured API key).

    Returns:
      The text with each secret replaced by ``[REDACTED]``.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return _KEY_PATTERN.sub("[REDACTED]", text)


def redact_url(url: str) -> str:
    """A URL without its password (``redis://user:secret@host`` → ``redis://user:***@host``)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)([^/@:]*):([^/@]*)@", r"\1\2:***@", url or "",
                  flags=re.I)


class ProviderError(Exception):
    """A failed call to the provider.

    Attributes:
      reason: Stable snake_case code used in dead letters and metrics.
      status: HTTP status, when the provider answered.
      request_id: The provider's ``x-request-id``, when known.
      retry_after: Seconds the provider asked us to wait, when it said so.
    """
    reason = "provider_error"
    retryable = False

    def __init__(self, message: str, *, status: Optional[int] = None,
                 request_id: Optional[str] = None, retry_after: Optional[float] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.code = code

    def __reduce__(self):
        # Keeps the error picklable with its keyword attributes.
        return (_rebuild, (type(self), self.message, self.status, self.request_id,
                           self.retry_after, self.code))


def _rebuild(cls, message, status, request_id, retry_after, code):
    return cls(message, status=status, request_id=request_id, retry_after=retry_after, code=code)


class RetryableError(ProviderError):
    """Transient: the same request may succeed later."""
    retryable = True


class RateLimited(RetryableError):
    reason = "rate_limited"


class ServerError(RetryableError):
    reason = "server_error"


class RequestTimeout(RetryableError):
    reason = "timeout"


class ConnectionFailed(RetryableError):
    reason = "connection_error"


class MalformedResponse(RetryableError):
    reason = "malformed_response"


class Conflict(RetryableError):
    """408 and 409: the provider asks for a retry."""
    reason = "conflict"


class PermanentError(ProviderError):
    """The same request will fail again: never retried."""


class ContextLengthExceeded(PermanentError):
    reason = "context_length"


class ContentFiltered(PermanentError):
    reason = "content_filter"


class BudgetExhausted(PermanentError):
    """--max_cost_usd is reached: no further request is sent (replayable with a larger budget)."""
    reason = "budget_exhausted"


class DailyLimitReached(PermanentError):
    """--requests_per_day is used up: nothing more is sent today (replayable once it resets)."""
    reason = "daily_limit"


class BadRequest(PermanentError):
    reason = "bad_request"


class TemplateFailed(PermanentError):
    """The prompt template cannot be rendered for this ticket (no request is sent)."""
    reason = "template_error"


class InvalidOutput(PermanentError):
    """The answer does not match ``--response_schema``, even after one repair request.

    Attributes:
      raw_output: The last answer's text, kept in the dead letter.
    """
    reason = "invalid_output"
    raw_output: Optional[str] = None


class AuthFailed(PermanentError):
    reason = "auth_error"


class NotFound(PermanentError):
    """404. Before any request of the job has succeeded, a 404 on the chat route says the base
    URL is wrong (see :class:`JobMisconfigured`); after, it is about one ticket."""
    reason = "not_found"


class ModelNotFound(NotFound):
    """404 ``model_not_found``: the endpoint does not serve the model (a dead letter
    ``not_found`` when it is about one ticket)."""


class Unprocessable(PermanentError):
    reason = "unprocessable"


class ProviderUnavailable(ProviderError):
    """The provider was unreachable (refused or reset connections, 5xx, timeouts) for longer than
    ``--max_outage_secs`` while this ticket waited for it. Not retried in this run; the dead
    letter is replayable once the provider is back."""
    reason = "provider_unavailable"


class JobMisconfigured(PermanentError):
    """Every ticket would fail the same way: the base URL, the model or the key is wrong (the
    job's first requests were all answered 404 or 401/403, none succeeded).

    Not a ticket's failure: ``CallModel`` raises it to fail the job, on any runner, and the
    driver prints its message (one line naming the flag to fix) and exits with code 2. Tickets
    that were waiting are not sent.
    """
    reason = "misconfigured"


# How a runner reports a worker's exception: "...JobMisconfigured: MESSAGE [while running 'X']".
_MISCONFIGURED = re.compile(r"JobMisconfigured: (.+?)(?: \[while running '[^\n]*'\])*\s*$",
                            re.MULTILINE)


def misconfiguration(exc: BaseException) -> Optional[str]:
    """The message of the :class:`JobMisconfigured` that failed a pipeline, if that is what did.

    Args:
      exc: What ``pipeline.run()`` or ``wait_until_finish()`` raised: our error itself (the
        in-process runner), or a runner's error whose text holds the worker's traceback.

    Returns:
      The one-line message, without the runner's step annotation; None for any other failure.
    """
    seen = 0
    cause: Optional[BaseException] = exc
    while cause is not None and seen < 8:
        if isinstance(cause, JobMisconfigured):
            match = _MISCONFIGURED.search(f"JobMisconfigured: {cause.message}")
            return match.group(1) if match else cause.message
        cause = cause.__cause__ or cause.__context__
        seen += 1
    match = _MISCONFIGURED.search(str(exc))
    return match.group(1) if match else None


class Interrupted(ProviderError):
    """The run is stopping (SIGINT/SIGTERM): the ticket was not sent, or its request was
    cancelled after ``--drain_secs``. Not retried in this run; the dead letter is replayable."""
    reason = "interrupted"
