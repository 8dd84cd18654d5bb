"""Anthropic's Messages API: request body, answer, error mapping, limit headers, the caller.

The pipeline builds one provider-neutral request (OpenAI's chat shape: ``model``, ``messages``
with a ``system`` message first, ``max_tokens``, ``temperature``, ``response_format``); this
module turns it into a Messages API body and the answer back into a
:class:`~transforms.llm.caller.Completion`, so flow control, the store, the ledger and the
report stay one implementation for every provider.

* :func:`messages_body` — the system prompt moves to ``system``; with ``cache`` the static
  prefix (the system prompt) gets a ``cache_control`` breakpoint (``ttl`` 5m or 1h); a JSON
  schema answer becomes one tool with that ``input_schema``, forced with ``tool_choice``.
* :func:`parse_message` — the text (or the forced tool's input, as JSON text), the stop reason
  in OpenAI's words, and the usage: ``prompt_tokens`` is every input token, cached or not
  (``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``), ``cached_tokens``
  the cache reads, ``cache_write_tokens`` the writes.
* :func:`error_for` — Anthropic's statuses and error types onto our typed errors: 429
  ``rate_limit_error`` and 529 ``overloaded_error`` are retryable (529 counts for the breaker as
  a server error), ``not_found_error`` about a model is ``ModelNotFound``.
* :func:`limit_headers` — ``anthropic-ratelimit-requests-*``, ``-input-tokens-*`` and
  ``-output-tokens-*`` as the limiter's ``requests``, ``input_tokens`` and ``output_tokens``
  (and ``-input-tokens-*`` as ``tokens`` too, the combined limit a --tokens_per_minute paces;
  reset is an RFC 3339 time).

Example::

    body = messages_body({"model": "claude-haiku-4-5", "messages": [...], "max_tokens": 256})
    completion = parse_message(raw_bytes, request_id="req_1")
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import orjson

from transforms import errors
from transforms.limits.limiter import AnnouncedLimit
from transforms.llm.caller import Completion, Headers
from transforms.llm.config import LlmConfig
from transforms.llm.providers.openai import retry_after

MESSAGES_PATH = "/v1/messages"
API_VERSION = "2023-06-01"
#: The forced tool a JSON-schema answer is asked through.
ANSWER_TOOL = "answer"
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                 "tool_use": "stop", "refusal": "content_filter"}
_MAX_MESSAGE_CHARS = 500


def messages_body(params: Mapping[str, Any], cache: bool = True,
                  cache_ttl: str = "5m") -> Dict[str, Any]:
    """A Messages API body from the pipeline's chat-shaped request ``params``."""
    system = [m["content"] for m in params["messages"] if m["role"] == "system"]
    body: Dict[str, Any] = {
        "model": params["model"], "max_tokens": int(params.get("max_tokens") or 1024),
        "messages": [{"role": m["role"], "content": m["content"]}
                     for m in params["messages"] if m["role"] != "system"]}
    if system:
        block: Dict[str, Any] = {"type": "text", "text": "\n\n".join(system)}
        if cache:
            block["cache_control"] = ({"type": "ephemeral"} if cache_ttl == "5m"
                                      else {"type": "ephemeral", "ttl": cache_ttl})
        body["system"] = [block]
    if params.get("temperature") is not None:
        body["temperature"] = min(1.0, float(params["temperature"]))  # Anthropic's range: 0..1
    schema = ((params.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema is not None:
        body["tools"] = [{"name": ANSWER_TOOL, "description": "Give the answer.",
                          "input_schema": schema}]
        body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
    return body


def parse_message(content: bytes, request_id: Optional[str] = None) -> Completion:
    """Reads a Messages API answer.

    Raises:
      ValueError: not JSON, or not a message (the caller maps it to ``MalformedResponse``).
    """
    body = orjson.loads(content)
    if body.get("type") != "message" or not isinstance(body.get("content"), list):
        raise ValueError("response is not a message")
    text = ""
    for block in body["content"]:
        if block.get("type") == "tool_use":
            text = json.dumps(block.get("input") or {}, ensure_ascii=False)
            break
        if block.get("type") == "text":
            text += block.get("text") or ""
    usage = body.get("usage")
    reason = _STOP_REASONS.get(body.get("stop_reason"), body.get("stop_reason"))
    if not usage:
        return Completion(content=text, model=body.get("model"), finish_reason=reason,
                          request_id=request_id, usage_known=False)
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return Completion(content=text, model=body.get("model"), finish_reason=reason,
                      prompt_tokens=int(usage.get("input_tokens") or 0) + read + written,
                      completion_tokens=int(usage.get("output_tokens") or 0),
                      cached_tokens=read, cache_write_tokens=written, request_id=request_id)


def error_for(status: int, error_type: Optional[str], message: str) -> type:
    """Our error class for an Anthropic status and error ``type``."""
    if status == 429 or error_type == "rate_limit_error":
        return errors.RateLimited
    if status == 529 or error_type == "overloaded_error" or status >= 500:
        return errors.ServerError
    if status in (401, 403):
        return errors.AuthFailed
    if status == 404:
        return errors.ModelNotFound if "model" in message.lower() else errors.NotFound
    if status == 413:
        return errors.ContextLengthExceeded
    if status == 400 and "prompt is too long" in message.lower():
        return errors.ContextLengthExceeded
    if status in (408, 409):
        return errors.Conflict
    return errors.BadRequest


def from_anthropic(exc: BaseException, secrets: Iterable[str] = ()) -> errors.ProviderError:
    """Maps an ``anthropic`` SDK (or transport) exception to our typed error."""
    import anthropic  # pylint: disable=import-outside-toplevel

    secrets = list(secrets)
    if isinstance(exc, (anthropic.APITimeoutError, TimeoutError)):
        return errors.RequestTimeout("request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}" if cause is not None else ""
        return errors.ConnectionFailed(errors.redact(f"connection error{detail}", secrets))
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = errors.redact(str(error.get("message") or exc.message),
                                secrets)[:_MAX_MESSAGE_CHARS]
        cls = error_for(exc.status_code, error.get("type"), message)
        return cls(message, status=exc.status_code, request_id=exc.request_id,
                   retry_after=retry_after(exc.response.headers), code=error.get("type"))
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
        return errors.MalformedResponse(errors.redact(
            f"malformed response: {type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])
    return errors.ConnectionFailed(
        errors.redact(f"{type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])


def _reset_secs(value: Optional[str], now: float) -> Optional[float]:
    if not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now)


def _number(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def limit_headers(headers: Optional[Headers],
                  now: Optional[float] = None) -> Dict[str, AnnouncedLimit]:
    """What ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}``
    announce, as the limiter's ``requests``, ``input_tokens`` and ``output_tokens`` (and the
    input tokens as ``tokens`` too); a kind without any of its headers is left out.
    """
    if not headers:
        return {}
    now = time.time() if now is None else now
    out = {}
    for kind, name in (("requests", "requests"), ("tokens", "input-tokens"),
                       ("input_tokens", "input-tokens"), ("output_tokens", "output-tokens")):
        prefix = f"anthropic-ratelimit-{name}-"
        values = [headers.get(prefix + part) for part in ("limit", "remaining", "reset")]
        if any(v is not None for v in values):
            out[kind] = AnnouncedLimit(_number(values[0]), _number(values[1]),
                                       _reset_secs(values[2], now))
    return out


class AnthropicCaller:
    """The ``anthropic`` async client (its retries off): one request per call, errors ours.

    The body is encoded once and posted with the client's low-level ``post`` (the SDK still
    does the key, the version header and the base URL); the answer is read with ``orjson``.

    Args:
      config: The endpoint (``base_url`` without ``/v1``, or None for Anthropic's), the timeout,
        the pool size, and prompt caching (``prompt_cache``, ``cache_ttl``).
      api_key: The resolved key (kept in memory only, redacted from every message).
    """

    def __init__(self, config: LlmConfig, api_key: str):
        self._config = config
        self._api_key = api_key
        self._client = None
        self._secrets = [api_key]

    async def open(self) -> None:
        import anthropic  # pylint: disable=import-outside-toplevel
        import httpx2 as httpx  # pylint: disable=import-outside-toplevel

        c = self._config
        size = c.max_concurrency + 8
        base = c.base_url[:-3] if c.base_url and c.base_url.rstrip("/").endswith("/v1") else (
            c.base_url)
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key, base_url=base, max_retries=0,
            timeout=c.request_timeout_secs,
            http_client=httpx.AsyncClient(limits=httpx.Limits(
                max_connections=size, max_keepalive_connections=size)))

    async def call(self, params: Mapping[str, Any], timeout: float) -> Tuple[Completion, Headers]:
        import asyncio  # pylint: disable=import-outside-toplevel
        import httpx2 as httpx  # pylint: disable=import-outside-toplevel

        c = self._config
        body = messages_body(params, cache=getattr(c, "prompt_cache", True),
                             cache_ttl=getattr(c, "cache_ttl", "5m"))
        try:
            response = await self._client.post(
                MESSAGES_PATH, cast_to=httpx.Response, content=orjson.dumps(body),
                options={"timeout": timeout, "headers": {"content-type": "application/json"}})
            headers = response.headers
            completion = parse_message(response.content, headers.get("request-id"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise from_anthropic(exc, self._secrets) from None
        return completion, headers

    def limits(self, headers: Headers) -> Dict[str, AnnouncedLimit]:
        """What an answer's headers announce (:func:`limit_headers`)."""
        return limit_headers(headers)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
