"""Google's Gemini API (``generateContent``): request body, answer, error mapping, the caller.

The pipeline builds one provider-neutral request (OpenAI's chat shape: ``model``, ``messages``
with a ``system`` message first, ``max_tokens``, ``temperature``, ``response_format``); this
module turns it into a ``POST /v1beta/models/{model}:generateContent`` body and the answer back
into a :class:`~transforms.llm.caller.Completion`, so flow control, the store, the ledger and the
report stay one implementation for every provider.

* :func:`generate_body` — the system prompt becomes ``systemInstruction`` and the conversation
  ``contents`` (roles ``user``/``model``), so the static prefix comes first and Gemini's
  implicit cache can serve it; ``max_tokens`` and ``temperature`` go to ``generationConfig``; a
  JSON schema answer asks for ``responseMimeType`` ``application/json`` with that schema as
  ``responseSchema`` (:func:`response_schema`: Gemini's OpenAPI subset).
* :func:`parse_response` — the first candidate's text, its ``finishReason`` in OpenAI's words,
  and ``usageMetadata``: ``promptTokenCount`` (which includes the cached tokens),
  ``candidatesTokenCount`` (+ ``thoughtsTokenCount``, billed as output) and
  ``cachedContentTokenCount``.
* :func:`error_for` — Google's HTTP statuses and ``google.rpc`` codes onto our typed errors;
  :func:`retry_delay` reads a ``RetryInfo`` detail's ``retryDelay`` (``"12s"``).
* :class:`GeminiCaller` — the official ``google-genai`` client, its retries off.

Gemini announces no rate-limit headers: the limiter learns from its 429s.

Example::

    body = generate_body({"model": "gemini-2.5-flash", "messages": [...], "max_tokens": 256})
    completion = parse_response(raw_bytes)
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import orjson

from transforms import errors
from transforms.limits.limiter import AnnouncedLimit
from transforms.llm.caller import Completion, Headers
from transforms.llm.config import LlmConfig

API_VERSION = "v1beta"
#: Where the official client sends a key it was not given, in the order it looks.
KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                   "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
                   "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                   "IMAGE_SAFETY": "content_filter"}
# JSON Schema keywords Gemini's responseSchema (an OpenAPI 3.0 subset) understands.
_SCHEMA_KEYS = ("description", "enum", "format", "nullable", "minItems", "maxItems", "minimum",
                "maximum", "minLength", "maxLength", "pattern", "title", "propertyOrdering")
_MAX_MESSAGE_CHARS = 500


# -- the request and the answer -----------------------------------------------------------------


def response_schema(schema: Mapping[str, Any]) -> Dict[str, Any]:
    """A JSON Schema as Gemini's ``responseSchema``: upper-case types, ``["x", "null"]`` as
    ``nullable``, and only the keywords it knows (``additionalProperties``, ``$schema`` and the
    like are left out: Gemini rejects them, and the answer is validated here anyway)."""
    out: Dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        kind = kinds[0] if kinds else None
    if isinstance(kind, str):
        out["type"] = kind.upper()
    for key in _SCHEMA_KEYS:
        if key in schema:
            out[key] = schema[key]
    if isinstance(schema.get("properties"), Mapping):
        out["properties"] = {name: response_schema(sub)
                             for name, sub in schema["properties"].items()}
        if "propertyOrdering" not in out:
            out["propertyOrdering"] = list(schema["properties"])
    if isinstance(schema.get("required"), list):
        out["required"] = list(schema["required"])
    if isinstance(schema.get("items"), Mapping):
        out["items"] = response_schema(schema["items"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            out["anyOf"] = [response_schema(sub) for sub in schema[key]]
    return out


def generate_body(params: Mapping[str, Any]) -> Dict[str, Any]:
    """A ``generateContent`` body from the pipeline's chat-shaped request ``params``."""
    system = [m["content"] for m in params["messages"] if m["role"] == "system"]
    body: Dict[str, Any] = {
        "contents": [{"role": "model" if m["role"] == "assistant" else "user",
                      "parts": [{"text": m["content"]}]}
                     for m in params["messages"] if m["role"] != "system"]}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: Dict[str, Any] = {}
    if params.get("max_tokens"):
        config["maxOutputTokens"] = int(params["max_tokens"])
    if params.get("temperature") is not None:
        config["temperature"] = float(params["temperature"])
    schema = ((params.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = response_schema(schema)
    if config:
        body["generationConfig"] = config
    return body


def parse_response(content: bytes | str, request_id: Optional[str] = None) -> Completion:
    """Reads a ``generateContent`` answer.

    A prompt blocked before any candidate (``promptFeedback.blockReason``) is an empty answer
    with finish reason ``content_filter``.

    Raises:
      ValueError: not JSON, or neither a candidate nor a blocked prompt (the caller maps it to
        ``MalformedResponse``).
    """
    body = orjson.loads(content)
    if not isinstance(body, dict):
        raise ValueError("response is not an object")
    candidates = body.get("candidates")
    request_id = request_id or body.get("responseId")
    if candidates:
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        text = "".join(p.get("text") or "" for p in parts if not p.get("thought"))
        raw = candidate.get("finishReason")
        reason = _FINISH_REASONS.get(raw, raw.lower() if isinstance(raw, str) else None)
    elif (body.get("promptFeedback") or {}).get("blockReason"):
        text, reason = "", "content_filter"
    else:
        raise ValueError("response has no candidates")
    usage = body.get("usageMetadata")
    if not usage:
        return Completion(content=text, model=body.get("modelVersion"), finish_reason=reason,
                          request_id=request_id, usage_known=False)
    return Completion(
        content=text, model=body.get("modelVersion"), finish_reason=reason,
        prompt_tokens=int(usage.get("promptTokenCount") or 0),
        completion_tokens=(int(usage.get("candidatesTokenCount") or 0)
                           + int(usage.get("thoughtsTokenCount") or 0)),
        cached_tokens=int(usage.get("cachedContentTokenCount") or 0), request_id=request_id)


# -- errors ---------------------------------------------------------------------------------------


def _details(body: Any) -> list:
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def retry_delay(body: Any) -> Optional[float]:
    """Seconds of a ``google.rpc.RetryInfo`` detail's ``retryDelay`` (``"12s"``, ``"0.5s"``)
    in a Google error body, or None."""
    for detail in _details(body):
        if detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            if isinstance(delay, Mapping):  # the proto's {"seconds": .., "nanos": ..} form
                return float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
            try:
                return max(0.0, float(str(delay).strip().rstrip("s")))
            except ValueError:
                return None
    return None


def _reason(body: Any) -> Optional[str]:
    for detail in _details(body):
        if detail.get("@type") == _ERROR_INFO:
            return detail.get("reason")
    return None


def error_for(status: int, code: Optional[str], message: str,
              reason: Optional[str] = None) -> type:
    """Our error class for an HTTP status, its ``google.rpc`` code name (``RESOURCE_EXHAUSTED``)
    and the ``ErrorInfo`` reason, when there is one."""
    lowered = message.lower()
    if status == 429 or code == "RESOURCE_EXHAUSTED":
        return errors.RateLimited
    if status in (401, 403) or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return errors.AuthFailed
    if reason == "API_KEY_INVALID" or "api key not valid" in lowered:
        return errors.AuthFailed  # Google answers a bad key with 400 INVALID_ARGUMENT
    if status == 504 or code == "DEADLINE_EXCEEDED":
        return errors.RequestTimeout
    if status >= 500:
        return errors.ServerError  # INTERNAL, UNAVAILABLE: counted by the breaker
    if status in (408, 409) or code == "ABORTED":
        return errors.Conflict
    if status == 404:
        return errors.ModelNotFound if "model" in lowered else errors.NotFound
    if "token count" in lowered and "exceeds" in lowered:
        return errors.ContextLengthExceeded
    return errors.BadRequest


def error_from_body(status: int, body: Any, secrets: Iterable[str] = (),
                    request_id: Optional[str] = None) -> errors.ProviderError:
    """Our typed error for a Google error body ``{"error": {code, message, status, details}}``."""
    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    code = error.get("status") if isinstance(error.get("status"), str) else None
    message = errors.redact(str(error.get("message") or f"HTTP {status}"),
                            list(secrets))[:_MAX_MESSAGE_CHARS]
    cls = error_for(status, code, message, _reason(body))
    return cls(message, status=status, request_id=request_id, retry_after=retry_delay(body),
               code=code)


def from_genai(exc: BaseException, secrets: Iterable[str] = ()) -> errors.ProviderError:
    """Maps a ``google-genai`` SDK (or transport) exception to our typed error."""
    from google.genai import errors as genai_errors  # pylint: disable=import-outside-toplevel
    import aiohttp  # pylint: disable=import-outside-toplevel

    secrets = list(secrets)
    if isinstance(exc, genai_errors.APIError):
        status = int(exc.code or 0)
        return error_from_body(status, exc.details, secrets)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return errors.RequestTimeout("request timed out")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return errors.ConnectionFailed(errors.redact(
            f"connection error: {type(exc).__name__}", secrets))
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
        return errors.MalformedResponse(errors.redact(
            f"malformed response: {type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])
    return errors.ConnectionFailed(
        errors.redact(f"{type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS])


# -- the caller -------------------------------------------------------------------------------


def _root(base_url: Optional[str]) -> Optional[str]:
    """The server's root: the client adds ``/v1beta/models/...`` itself, so a ``--base_url``
    ending in ``/v1`` or ``/v1beta`` (the simulator's) loses it."""
    if not base_url:
        return None
    base = base_url.rstrip("/")
    for suffix in ("/v1beta", "/v1"):
        if base.endswith(suffix):
            return base[:-len(suffix)]
    return base


class GeminiCaller:
    """The ``google-genai`` async client (its retries off): one request per call, errors ours.

    The body is built here and posted through the client's request layer, as it is on the wire
    (``generateContent``'s REST body), so the SDK still does the key (``x-goog-api-key``), the
    base URL, the API version and its typed ``APIError``; the answer's text is read with
    ``orjson`` into a :class:`Completion` without building the SDK's pydantic response (which
    ``models.generate_content`` would, at several times the CPU of the request itself).

    Args:
      config: The endpoint (``base_url``, or None for Google's), the timeout, the pool size.
      api_key: The resolved key (kept in memory only, redacted from every message).
    """

    def __init__(self, config: LlmConfig, api_key: str):
        self._config = config
        self._api_key = api_key
        self._client = None
        self._secrets = [api_key]

    async def open(self) -> None:
        from google import genai  # pylint: disable=import-outside-toplevel
        from google.genai import types  # pylint: disable=import-outside-toplevel

        c = self._config
        # attempts=1: no retry of the SDK's own (not even its implicit one on a refused
        # connection); the flow's retry layer is the only one.
        options = types.HttpOptions(
            base_url=_root(c.base_url), api_version=API_VERSION,
            timeout=int(c.request_timeout_secs * 1000),
            retry_options=types.HttpRetryOptions(attempts=1))
        self._client = genai.Client(api_key=self._api_key, http_options=options).aio

    async def call(self, params: Mapping[str, Any], timeout: float) -> Tuple[Completion, Headers]:
        body = generate_body(params)
        options = (None if abs(timeout - self._config.request_timeout_secs) < 1e-3
                   else {"timeout": int(timeout * 1000)})
        try:
            # The client's request layer: the documented REST body as is (see the class doc).
            response = await self._client._api_client.async_request(  # noqa: SLF001
                "post", f"models/{params['model'].removeprefix('models/')}:generateContent", body,
                options)
            headers = response.headers or {}
            completion = parse_response(response.body or b"")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise from_genai(exc, self._secrets) from None
        return completion, headers

    def limits(self, headers: Headers) -> Dict[str, AnnouncedLimit]:
        """Gemini announces no limits in its headers."""
        del headers
        return {}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def gemini_caller(config: LlmConfig, api_key: str) -> GeminiCaller:
    """The caller factory of ``--provider gemini``."""
    return GeminiCaller(config, api_key)

