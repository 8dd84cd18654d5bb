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
from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple

import openai

from transforms import errors
from transforms.llm.config import LlmConfig

Headers = Mapping[str, str]


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
    """The ``openai`` async client: one request per call, its errors mapped to ours.

    Args:
      config: The endpoint (base URL), the timeout and the connection pool's size.
      api_key: The resolved key (kept in memory only, redacted from every message).
    """

    def __init__(self, config: LlmConfig, api_key: str):
        self._config = config
        self._api_key = api_key
        self._client: Optional[openai.AsyncOpenAI] = None

    async def open(self) -> None:
        c = self._config
        limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(
            max_connections=c.max_concurrency + 8, max_keepalive_connections=c.max_concurrency + 8)
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key, base_url=c.base_url, max_retries=0,
            timeout=c.request_timeout_secs,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits,
                                                       timeout=c.request_timeout_secs))

    async def call(self, params: Mapping[str, Any], timeout: float) -> Tuple[Completion, Headers]:
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                **params, timeout=timeout)
            parsed = raw.parse()
            if not parsed.choices or parsed.choices[0].message is None:
                raise ValueError("response has no choices")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to our typed errors right here
            raise errors.from_openai(exc, [self._api_key]) from None
        choice = parsed.choices[0]
        usage = parsed.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
        headers = raw.headers
        return Completion(
            content=choice.message.content or "", model=parsed.model,
            finish_reason=choice.finish_reason,
            prompt_tokens=(usage.prompt_tokens or 0) if usage is not None else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage is not None else 0,
            cached_tokens=(getattr(details, "cached_tokens", 0) or 0),
            request_id=headers.get("x-request-id"), usage_known=usage is not None), headers

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def openai_caller(config: LlmConfig, api_key: str) -> Caller:
    """The default caller factory."""
    return OpenAICaller(config, api_key)
