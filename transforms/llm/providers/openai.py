"""The OpenAI wire format, for OpenAI and every OpenAI-compatible server (vLLM, gateways, the
simulator): everything here knows what the chat API looks like on the wire, nothing above it does.

* the request: :data:`CHAT_PATH`, :func:`encode_body`; with ``prompt_cache`` on, a
  ``prompt_cache_key`` (:func:`prompt_cache_key`: a stable hash of the static prefix, so that
  requests sharing it are routed to where it is cached);
* the answer: :func:`parse_completion` (content, finish reason, usage with cached tokens);
* errors: :func:`from_openai` and :func:`typed_error` map what the ``openai`` SDK raises to our
  typed errors (:mod:`transforms.errors`), :func:`error_for_status` chooses the class of a status
  and error code, :func:`retry_after` reads ``retry-after-ms``/``retry-after``;
* limits: :func:`limit_headers` reads ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
  into :class:`~transforms.limits.limiter.AnnouncedLimit` (:func:`parse_duration` for ``6m0s``);
* the Batch API's line format: :func:`batch_request_line`, :func:`classify_line`,
  :data:`BATCH_ENDPOINT` and a file's limits (its Files and Batches client:
  :mod:`transforms.llm.providers.openai_batch`);
* :class:`OpenAICaller`: one request on the SDK's aiohttp transport, no retries.

Example::

    caller = OpenAICaller(config, api_key)
    await caller.open()
    completion, headers = await caller.call(request.params, timeout=30.0)
    limiter.observe_limits(caller.limits(headers))
    await caller.close()
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import aiohttp
import httpx2
import openai
import orjson

from transforms import errors
from transforms.limits.limiter import AnnouncedLimit
from transforms.llm.caller import Completion, Headers
from transforms.llm.config import LlmConfig
from transforms.llm.providers import OK, PERMANENT, RETRYABLE, LineOutcome

CHAT_PATH = "/chat/completions"
_MAX_MESSAGE_CHARS = 500

# -- the request and the answer -----------------------------------------------------------------

def encode_body(params: Mapping[str, Any]) -> bytes:
    """The request body: compact JSON, UTF-8, by ``orjson``; what it refuses (a non-string key,
    an int over 64 bits, a lone surrogate) is encoded as the SDK's ``create`` did, by ``json``
    (which raises a ``ValueError`` for what it cannot encode either)."""
    try:
        return orjson.dumps(params)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(params, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()


def parse_completion(content: bytes, request_id: Optional[str] = None) -> Completion:
    """Reads the parts we use from a chat completion's JSON body.

    Raises:
      ValueError: the body is not JSON, or has no choice with a message (a ``json`` decode
        error is a ``ValueError``); ``AttributeError``/``TypeError`` for bodies of another shape.
        :func:`from_openai` maps all of these to ``MalformedResponse``.
    """
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        # What orjson refuses, json may read (NaN, huge numbers); if not, its error (the same
        # message as before orjson) is the dead letter's.
        body = json.loads(content)
    choices = body.get("choices")
    if not choices or choices[0].get("message") is None:
        raise ValueError("response has no choices")
    choice = choices[0]
    usage = body.get("usage")
    if usage is None:
        return Completion(content=choice["message"].get("content") or "", model=body.get("model"),
                          finish_reason=choice.get("finish_reason"), request_id=request_id,
                          usage_known=False)
    details = usage.get("prompt_tokens_details") or {}
    return Completion(
        content=choice["message"].get("content") or "", model=body.get("model"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        cached_tokens=details.get("cached_tokens") or 0, request_id=request_id)


# -- errors ---------------------------------------------------------------------------------------


def typed_error(exc: BaseException, secrets: Iterable[str] = ()) -> errors.ProviderError:
    """Maps what a call raised to our typed error, as :func:`from_openai` does, except
    that connection failures the aiohttp transport reports as timeouts stay connection errors.

    The SDK's vendored aiohttp transport maps every ``aiohttp.ClientConnectionError`` (a
    refused connection, a server that disconnected) to ``httpx`` ``ConnectTimeout``, which the
    SDK raises as ``APITimeoutError``; on the httpx transport those were connection errors.
    """
    if isinstance(exc, openai.APITimeoutError):
        cause = _transport_cause(exc)
        if cause is not None and not isinstance(cause, TimeoutError):
            return errors.ConnectionFailed(
                errors.redact(f"connection error: {type(cause).__name__}", secrets))
    elif isinstance(exc, TimeoutError):
        # Raised by aiohttp past the SDK (not in the transport's map): still a timeout.
        return errors.RequestTimeout("request timed out")
    return from_openai(exc, secrets)


def _transport_cause(exc: BaseException) -> Optional[BaseException]:
    """The first aiohttp exception in ``exc``'s chain of causes, if any."""
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:
        if isinstance(cause, aiohttp.ClientError):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def retry_after(headers) -> Optional[float]:
    """Reads ``retry-after-ms`` or ``retry-after`` (seconds) from response headers."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    secs = headers.get("retry-after")
    if secs:
        try:
            return max(0.0, float(secs))
        except ValueError:
            return None  # An HTTP date; rare for LLM providers, so fall back to backoff.
    return None


_NO_SUCH_MODEL = re.compile(r"\bmodel\b.*\b(does not exist|not found)", re.IGNORECASE)


def error_for_status(status: int, code: Optional[str], message: str) -> type:
    """Chooses our error class for an HTTP status and the provider's error code."""
    if status == 429:
        return errors.RateLimited
    if status in (408, 409):
        return errors.Conflict
    if status >= 500:
        return errors.ServerError
    if status in (401, 403):
        return errors.AuthFailed
    if status == 404:
        # OpenAI says code model_not_found; vLLM "The model `x` does not exist", Ollama 'model
        # "x" not found'. Any other 404 (OpenAI's "Invalid URL (POST /v1/...)") is NotFound.
        if code == "model_not_found" or _NO_SUCH_MODEL.search(message):
            return errors.ModelNotFound
        return errors.NotFound
    if status == 422:
        return errors.Unprocessable
    if status == 400:
        if code == "context_length_exceeded" or "context length" in message.lower():
            return errors.ContextLengthExceeded
        if code == "content_filter" or "content management policy" in message.lower():
            return errors.ContentFiltered
        return errors.BadRequest
    return errors.BadRequest if status < 500 else errors.ServerError


def from_openai(exc: BaseException, secrets: Iterable[str] = ()) -> errors.ProviderError:
    """Maps an openai SDK (or transport) exception to our typed error.

    Args:
      exc: The exception raised by the SDK call.
      secrets: Strings to redact from the message.

    Returns:
      A :class:`~transforms.errors.ProviderError` subclass instance; unknown exceptions become
      ``MalformedResponse`` when they are decoding errors, else ``ConnectionFailed``.
    """
    secrets = list(secrets)
    if isinstance(exc, openai.APITimeoutError):
        return errors.RequestTimeout("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}" if cause is not None else ""
        return errors.ConnectionFailed(errors.redact(f"connection error{detail}", secrets))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = getattr(exc, "code", None)
        body_message = exc.message if isinstance(exc.message, str) else str(exc)
        message = errors.redact(body_message, secrets)[:_MAX_MESSAGE_CHARS]
        cls = error_for_status(status, code, message)
        return cls(message, status=status, request_id=exc.request_id,
                   retry_after=retry_after(exc.response.headers), code=code)
    if isinstance(exc, openai.APIResponseValidationError):
        return errors.MalformedResponse(errors.redact(str(exc), secrets)[:_MAX_MESSAGE_CHARS],
                                        status=getattr(exc, "status_code", None))
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
        # json decode errors and unexpected shapes from a 200 response.
        return errors.MalformedResponse(errors.redact(
            f"malformed response: {type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])
    return errors.ConnectionFailed(
        errors.redact(f"{type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])


# -- limit headers ----------------------------------------------------------------------------


def limit_headers(headers: Optional[Headers]) -> Dict[str, AnnouncedLimit]:
    """What an answer's ``x-ratelimit-*`` headers announce of the ``requests`` and ``tokens``
    limits (a kind without any of its three headers is left out).

    ``x-ratelimit-reset-*`` is when the WHOLE budget is back (OpenAI: "resets to its initial
    state"), as a duration (``1s``, ``6m0s``, ``120ms``).
    """
    if not headers:
        return {}
    announced = {}
    for kind in ("requests", "tokens"):
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if limit is not None or remaining is not None or reset is not None:
            announced[kind] = AnnouncedLimit(limit=limit, remaining=remaining, reset_secs=reset)
    return announced


def _number(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):  # absent or not a number: as if not sent
        return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> Optional[float]:
    """Parses OpenAI's reset durations (``"1s"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"``).

    Returns:
      Seconds, or None when the text is empty or not a duration.
    """
    text = (text or "").strip()
    if not text:
        return None
    seconds = _number(text)
    if seconds is not None:
        return seconds
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


# -- the Batch API's line format ------------------------------------------------------------------

BATCH_ENDPOINT = "/v1/chat/completions"
#: OpenAI's limits for one batch input file.
#: Roles of the messages that make up the static prefix (before the first ticket message).
_PREFIX_ROLES = ("system", "developer")
#: OpenAI caches prefixes of 1,024 tokens or more: a shorter static prefix gets no key (it would
#: not be cached, and servers that merely speak OpenAI's format never see the field for it).
_MIN_CACHED_PREFIX_CHARS = 4 * 1024


@functools.lru_cache(maxsize=64)
def _prefix_key(model: str, contents: Tuple[str, ...]) -> str:
    digest = hashlib.sha256(model.encode("utf-8"))
    for text in contents:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return "tf-" + digest.hexdigest()[:32]


def prompt_cache_key(params: Mapping[str, Any]) -> Optional[str]:
    """OpenAI's ``prompt_cache_key`` for a request: a hash of its model and its static prefix
    (the leading system messages: the system prompt and ``--prompt_prefix_file``), the same for
    every ticket of a job; None when the request has no such prefix or one too short for OpenAI
    to cache (under about 1,024 tokens). (The hash is memoized: the prefix strings are the same
    objects for every ticket, so their hashes are cached too.)"""
    contents = []
    for message in params.get("messages") or ():
        if message.get("role") not in _PREFIX_ROLES or not isinstance(message.get("content"),
                                                                      str):
            break
        contents.append(message["content"])
    if sum(len(text) for text in contents) < _MIN_CACHED_PREFIX_CHARS:
        return None
    return _prefix_key(str(params.get("model")), tuple(contents))


MAX_LINES = 50_000
MAX_BYTES = 200_000_000


def batch_request_line(custom_id: str, params: Mapping[str, Any], config: Any = None) -> str:
    """One line of a batch input file (JSON, no newline) for a chat request (``config``, the
    ``LlmConfig``, is for wire formats whose body depends on it: not this one)."""
    del config
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT,
                       "body": dict(params)}, ensure_ascii=False, separators=(",", ":"))


def _completion(body: Any) -> Dict[str, Any]:
    """The parts of a chat completion body we keep.

    Raises:
      ValueError: the body is not a chat completion with a message.
    """
    choice = body["choices"][0]
    message = choice["message"]
    if not isinstance(message, Mapping):
        raise TypeError("no message")
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return {"content": message.get("content") or "", "model": body.get("model"),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "cached_tokens": int(details.get("cached_tokens") or 0)}


def classify_line(record: Mapping[str, Any]) -> LineOutcome:
    """Classifies one parsed line of a batch's output or error file.

    Raises:
      ValueError: the line has no string ``custom_id`` (it cannot be mapped to a request).
    """
    cid = record.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError("a batch output line without custom_id")  # noqa: TRY004 - bad data
    response = record.get("response")
    if isinstance(response, Mapping) and response.get("status_code") is not None:
        status = int(response["status_code"])
        body = response.get("body")
        request_id = response.get("request_id")
        if status == 200:
            try:
                return LineOutcome(cid, OK, 200, completion=_completion(body),
                                   request_id=request_id)
            except (KeyError, IndexError, TypeError, ValueError):
                return LineOutcome(cid, RETRYABLE, 200, "malformed_response",
                                   "a 200 line whose body is not a chat completion",
                                   request_id=request_id)
        error = (body or {}).get("error") if isinstance(body, Mapping) else None
        error = error if isinstance(error, Mapping) else {}
        code, message = error.get("code"), errors.redact(str(error.get("message") or ""))[:500]
        cls = error_for_status(status, code, message)
        return LineOutcome(cid, RETRYABLE if cls.retryable else PERMANENT, status, code,
                           message, request_id=request_id)
    error = record.get("error") if isinstance(record.get("error"), Mapping) else {}
    code = error.get("code") or "batch_line_failed"
    message = errors.redact(str(error.get("message") or "the batch returned no response"))[:500]
    # A line never run (expired, cancelled) or an error without a response: worth another round.
    return LineOutcome(cid, RETRYABLE, None, code, message)


# -- the caller -------------------------------------------------------------------------------


class OpenAICaller:
    """The ``openai`` async client on its aiohttp transport: one request per call, errors ours.

    The body is encoded once and sent with the client's low-level ``post`` (not
    ``chat.completions.create``, whose per-call walk of the typed parameters costs more than the
    rest of the request), so the SDK still does the key, the base URL, the headers and its typed
    ``APIStatusError`` per status; the answer is read with ``orjson`` into a :class:`Completion`,
    without building the SDK's pydantic model.

    Args:
      config: The endpoint (base URL), the timeout and the connection pool's size
        (``max_concurrency + 8`` connections).
      api_key: The resolved key (kept in memory only, redacted from every message).
    """

    def __init__(self, config: LlmConfig, api_key: str):
        self._config = config
        self._api_key = api_key
        self._client: Optional[openai.AsyncOpenAI] = None
        self._secrets = [api_key]

    async def open(self) -> None:
        c = self._config
        size = c.max_concurrency + 8
        limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=c.base_url, max_retries=0,
            timeout=c.request_timeout_secs,
            http_client=openai.DefaultAioHttpClient(limits=limits,
                                                    timeout=c.request_timeout_secs))

    async def call(self, params: Mapping[str, Any], timeout: float) -> Tuple[Completion, Headers]:
        if self._config.prompt_cache and "prompt_cache_key" not in params:
            key = prompt_cache_key(params)
            if key is not None:
                params = {**params, "prompt_cache_key": key}
        try:
            response = await self._client.post(
                CHAT_PATH, cast_to=httpx2.Response, content=encode_body(params),
                options={"timeout": timeout})
            headers = response.headers
            completion = parse_completion(response.content, headers.get("x-request-id"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise typed_error(exc, self._secrets) from None
        return completion, headers

    def limits(self, headers: Headers) -> Dict[str, AnnouncedLimit]:
        """What an answer's headers announce of the provider's limits (:func:`limit_headers`)."""
        return limit_headers(headers)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
