"""The innermost layer: one HTTP request to the provider, nothing else.

A caller turns one request into ``(Completion, headers)`` or raises one of our typed errors
(:mod:`transforms.errors`); it never retries (``max_retries=0``: the flow-control layer is the
only retry layer) and knows nothing of limits, budgets or tickets. Its HTTP client is built in
:meth:`~OpenAICaller.open` (on the engine's event loop) and closed in :meth:`~OpenAICaller.close`.

The engine takes a *caller factory* (``factory(config, api_key) -> Caller``), so the layers above
are unit-tested with a fake caller and no HTTP at all.

The records the layers pass each other live here too: :class:`Request` (the chat parameters plus
what the limiter must know about them), :class:`Completion` (the parts of an answer we use) and
:class:`Answer` (a completion as the layers above return it).

Example::

    caller = OpenAICaller(config, api_key)
    await caller.open()
    completion, headers = await caller.call(request.params, timeout=30.0)
    await caller.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple

import aiohttp
import httpx2
import openai
import orjson

from transforms import errors
from transforms.llm.config import LlmConfig

Headers = Mapping[str, str]

_CHAT_PATH = "/chat/completions"


@dataclasses.dataclass(frozen=True)
class Request:
    """One chat request.

    Attributes:
      params: The request body: ``model``, ``messages``, ``max_tokens`` and, when set,
        ``temperature`` and ``response_format`` (no transport settings such as timeouts).
      schema_tokens: The response schema's share of the prompt (providers count it), for the
        limiter's estimate.
    """
    params: Dict[str, Any]
    schema_tokens: int = 0

    @property
    def messages(self) -> List[Dict[str, str]]:
        return self.params["messages"]

    @property
    def max_tokens(self) -> int:
        return int(self.params.get("max_tokens") or 0)

    def with_messages(self, messages: List[Dict[str, str]]) -> "Request":
        """The same request with other messages (a repair follow-up)."""
        return dataclasses.replace(self, params={**self.params, "messages": messages})


@dataclasses.dataclass(frozen=True)
class Completion:
    """The parts of a chat completion the pipeline uses.

    Attributes:
      usage_known: Whether the provider reported ``usage`` (tokens are 0 otherwise).
    """
    content: str
    model: Optional[str] = None
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    request_id: Optional[str] = None
    usage_known: bool = True


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a layer returns for a request.

    Attributes:
      completion: The (last, valid) completion.
      output: The validated structured answer, with a response schema.
      cached: Answered from the response store: no request was sent, nothing paid.
    """
    completion: Completion
    output: Optional[Mapping[str, Any]] = None
    cached: bool = False


class Caller(Protocol):
    """One request, one answer; typed errors only."""

    async def open(self) -> None:
        """Builds the client (on the event loop that will use it)."""

    async def call(self, params: Mapping[str, Any], timeout: float) -> Tuple[Completion, Headers]:
        """Sends one request.

        Raises:
          errors.ProviderError: a subclass saying what went wrong (retryable or permanent).
        """

    async def close(self) -> None:
        """Closes the client."""


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
        try:
            response = await self._client.post(
                _CHAT_PATH, cast_to=httpx2.Response, content=encode_body(params),
                options={"timeout": timeout})
            headers = response.headers
            completion = parse_completion(response.content, headers.get("x-request-id"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise typed_error(exc, self._secrets) from None
        return completion, headers

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


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
        :func:`transforms.errors.from_openai` maps all of these to ``MalformedResponse``.
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


def typed_error(exc: BaseException, secrets: Iterable[str] = ()) -> errors.ProviderError:
    """Maps what a call raised to our typed error, as :func:`errors.from_openai` does, except
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
    return errors.from_openai(exc, secrets)


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


def openai_caller(config: LlmConfig, api_key: str) -> Caller:
    """The default caller factory."""
    return OpenAICaller(config, api_key)
