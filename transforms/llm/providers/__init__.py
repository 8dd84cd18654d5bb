"""What every provider module produces, whatever its wire format.

One module per wire format sits here: :mod:`transforms.llm.providers.openai` (OpenAI and every
OpenAI-compatible server: vLLM, gateways, the simulator),
:mod:`transforms.llm.providers.openai_batch` (its Files and Batches API),
:mod:`transforms.llm.providers.anthropic` (Anthropic's Messages API),
:mod:`transforms.llm.providers.anthropic_batch` (its Message Batches API) and
:mod:`transforms.llm.providers.gemini` (Google's Gemini API, ``generateContent``) and
:mod:`transforms.llm.providers.gemini_batch` (its batch mode).
:func:`provider_caller` builds the caller of ``LlmConfig.provider``. A provider module
holds the request body, the response and usage parsing, the error mapping to
:mod:`transforms.errors`, the reading of its limit headers into
:class:`~transforms.limits.limiter.AnnouncedLimit`, and its Batch API line format; the layers
above it (:mod:`transforms.llm.flow`, the cache, the repair, the answerer) never see the wire.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

PROVIDERS = ("openai", "anthropic", "gemini")


def provider_of(model: str, given: Optional[str] = None) -> str:
    """``--provider``, or what the model's name says (``claude-*``, ``gemini-*``, else openai)."""
    if given:
        return given
    name = (model or "").lower().rsplit("/", 1)[-1]
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith("gemini"):
        return "gemini"
    return "openai"


def provider_caller(config, api_key: str):
    """The caller of ``config.provider`` (the default ``caller_factory`` of ``CallModel``)."""
    # pylint: disable=import-outside-toplevel
    provider = getattr(config, "provider", "openai")
    if provider == "anthropic":
        from transforms.llm.providers.anthropic import AnthropicCaller
        return AnthropicCaller(config, api_key)
    if provider == "gemini":
        from transforms.llm.providers.gemini import GeminiCaller
        return GeminiCaller(config, api_key)
    from transforms.llm.providers.openai import OpenAICaller
    return OpenAICaller(config, api_key)


#: Providers whose input-token limit does not count prompt-cache reads (Anthropic's ITPM on
#: most models: ``cache_read_input_tokens`` are free; cache writes and uncached input count).
#: The one place this rule lives; a provider not named here counts every input token.
CACHE_READS_FREE = frozenset({"anthropic"})


def limited_input_tokens(provider: str, prompt_tokens: int, cached_tokens: int) -> int:
    """What an answer charged to the provider's input-token limit.

    Args:
      provider: ``LlmConfig.provider``.
      prompt_tokens: Every input token of the answer, cached or not.
      cached_tokens: Those read from the prompt cache.
    """
    if provider in CACHE_READS_FREE:
        return max(0, prompt_tokens - cached_tokens)
    return prompt_tokens


#: The fate of one line of a batch's output: answered, failed for good, or worth another round.
OK = "ok"
PERMANENT = "permanent"
RETRYABLE = "retryable"


@dataclasses.dataclass(frozen=True)
class LineOutcome:
    """One line of a batch's output or error file, classified.

    Attributes:
      custom_id: The request's id.
      kind: ``ok``, ``permanent`` (the same request fails again: a dead letter, as online) or
        ``retryable`` (5xx, 429, 408/409, a malformed answer, a line the batch never ran).
      status: The line's HTTP status (None for a line never run).
      code: The provider's error code, when there is one.
      message: The provider's error message (redacted), when there is one.
      completion: For ``ok``: content, model, finish_reason and the usage's token counts.
      request_id: The provider's id of the line's answer.
      provider: The wire format the line came in (which error mapping its status and code
        follow: :func:`transforms.llm.batch.error_of`).
    """
    custom_id: str
    kind: str
    status: Optional[int] = None
    code: Optional[str] = None
    message: str = ""
    completion: Optional[Dict[str, Any]] = None
    request_id: Optional[str] = None
    provider: str = "openai"


def batch_wire(provider: str):
    """The module of ``provider``'s Batch API line format: ``MAX_LINES``, ``MAX_BYTES``,
    ``batch_request_line(custom_id, params, config)`` and ``classify_line(record)``."""
    # pylint: disable=import-outside-toplevel
    if provider == "anthropic":
        from transforms.llm.providers import anthropic_batch
        return anthropic_batch
    if provider == "gemini":
        from transforms.llm.providers import gemini_batch
        return gemini_batch
    from transforms.llm.providers import openai
    return openai


def batch_client(config, api_key: str, **kwargs):
    """The Batch API client of ``config.provider`` (an ``LlmConfig``): OpenAI's Files and
    Batches, Anthropic's Message Batches or Gemini's batch mode; ``kwargs`` go to its
    constructor."""
    # pylint: disable=import-outside-toplevel
    provider = getattr(config, "provider", "openai")
    if provider == "anthropic":
        from transforms.llm.providers.anthropic_batch import AnthropicBatchClient
        return AnthropicBatchClient(config.base_url, api_key, **kwargs)
    if provider == "gemini":
        from transforms.llm.providers.gemini_batch import GeminiBatchClient
        return GeminiBatchClient(config.base_url, api_key, model=config.model, **kwargs)
    from transforms.llm.providers.openai_batch import BatchClient
    return BatchClient(config.base_url, api_key, **kwargs)



