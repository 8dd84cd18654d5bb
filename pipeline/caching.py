"""The prompt cache in forecasts: what ``--estimate`` and a ``--sample`` projection assume.

A job's static prefix (the system prompt and ``--prompt_prefix_file``) is the same in every
request. The forecasts assume the job keeps it warm: the first request writes it to the
provider's cache and every later one reads it, as long as requests come closer together than
the TTL (``--cache_ttl``: 5 minutes or 1 hour, restarted by every hit), which a job sending a
steady stream does. In practice the first wave of concurrent requests (up to
``--max_concurrency``) may all miss and write; the forecast counts one write.

What each provider caches and reports:

* ``anthropic`` — the prefix marked with ``cache_control`` (``--prompt_cache on``), once it
  has 1,024 tokens (2,048 for Haiku models); a write costs 1.25x input (2x with ``1h``), a read
  0.1x, and reads do not count against the input-tokens-per-minute limit;
* ``openai`` — any prefix of 1,024 tokens or more, in 128-token steps, marker or not; no write
  surcharge (the first request is plain input), reads at the cached-input price; they still count
  against the token limit;
* ``gemini`` — implicit caching of prefixes of 1,024 tokens or more (2,048 for Pro models);
  reads at the cached price.

Example::

    figures = forecast(prefix_tokens=2100, tickets=1000, provider="anthropic",
                       model="claude-haiku-4-5", enabled=True)
    figures.read_tokens, figures.write_tokens
"""

from __future__ import annotations

import dataclasses

#: The forecasts' assumption, in words (shown beside the numbers).
ASSUMPTION = ("the first request writes the static prefix to the provider's cache and the "
              "others read it while within the TTL")
_INCREMENT = 128


@dataclasses.dataclass(frozen=True)
class CacheForecast:
    """Cached prompt tokens of a whole job.

    Attributes:
      read_tokens: Prompt tokens read from the cache.
      write_tokens: Prompt tokens written to it (billed as writes: Anthropic only).
      prefix_tokens: The static prefix's tokens (0: none the provider would cache).
    """
    read_tokens: int = 0
    write_tokens: int = 0
    prefix_tokens: int = 0


def minimum_prefix(provider: str, model: str) -> int:
    """The shortest prefix the provider caches for ``model``."""
    if provider == "anthropic" and "haiku" in model.lower():
        return 2048
    if provider == "gemini" and "pro" in model.lower():
        return 2048  # Gemini's implicit cache: 2,048 for 2.5 Pro, 1,024 for 2.5 Flash
    return 1024


def cacheable_tokens(prefix_tokens: int, provider: str, model: str) -> int:
    """How much of a prefix of ``prefix_tokens`` the provider caches (0 if too short)."""
    minimum = minimum_prefix(provider, model)
    if prefix_tokens < minimum:
        return 0
    if provider == "anthropic":
        return prefix_tokens
    return minimum + (prefix_tokens - minimum) // _INCREMENT * _INCREMENT


def forecast(prefix_tokens: int, tickets: int, provider: str, model: str,
             enabled: bool) -> CacheForecast:
    """The cache reads and writes of ``tickets`` requests sharing a prefix (see the module).

    Args:
      prefix_tokens: The static prefix's tokens, as the pipeline estimates them.
      enabled: ``--prompt_cache on`` (Anthropic caches nothing unmarked; OpenAI's and Gemini's
        caches are automatic and apply either way).
    """
    if tickets <= 0 or (provider == "anthropic" and not enabled):
        return CacheForecast()
    cached = cacheable_tokens(prefix_tokens, provider, model)
    if not cached:
        return CacheForecast()
    writes = cached if provider == "anthropic" else 0
    return CacheForecast(read_tokens=cached * (tickets - 1), write_tokens=writes,
                         prefix_tokens=cached)
