"""The layers' common records and the innermost layer's interface: one request, one answer.

A :class:`Caller` turns one request into ``(Completion, headers)`` or raises one of our typed
errors (:mod:`transforms.errors`); it never retries (the flow-control layer is the only retry
layer) and knows nothing of limits, budgets or tickets; it reads its own provider's limit headers
(:meth:`Caller.limits`). Each wire format has its caller in :mod:`transforms.llm.providers`
(:class:`~transforms.llm.providers.openai.OpenAICaller`); its HTTP client is built in ``open``
(on the engine's event loop) and closed in ``close``.

The engine takes a *caller factory* (``factory(config, api_key) -> Caller``), so the layers above
are unit-tested with a fake caller and no HTTP at all.

The records the layers pass each other live here too: :class:`Request` (the chat parameters plus
what the limiter must know about them), :class:`Completion` (the parts of an answer we use) and
:class:`Answer` (a completion as the layers above return it).

Example::

    caller = factory(config, api_key)
    await caller.open()
    completion, headers = await caller.call(request.params, timeout=30.0)
    limiter.observe_limits(caller.limits(headers))
    await caller.close()
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple

from transforms.limits.limiter import AnnouncedLimit

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

    Every provider module fills the usage the same way: ``prompt_tokens`` is every prompt token
    (cached or not), ``cached_tokens`` the prompt cache's reads (Anthropic
    ``cache_read_input_tokens``, OpenAI ``prompt_tokens_details.cached_tokens``, Gemini
    ``cachedContentTokenCount``; also readable as ``cache_read_tokens``) and
    ``cache_write_tokens`` the tokens written to it (Anthropic ``cache_creation_input_tokens``;
    0 where the provider charges nothing extra for a write).

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
    cache_write_tokens: int = 0

    @property
    def cache_read_tokens(self) -> int:
        """The prompt cache's reads (the same as ``cached_tokens``)."""
        return self.cached_tokens


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

    def limits(self, headers: Headers) -> Mapping[str, AnnouncedLimit]:
        """What an answer's headers announce of the ``requests`` and ``tokens`` limits."""

    async def close(self) -> None:
        """Closes the client."""
