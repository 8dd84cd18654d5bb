"""A model of OpenAI's automatic prompt caching for the chat completions endpoint.

OpenAI caches the prefix of every prompt of at least 1,024 tokens, with no marker and no write
surcharge: a later request that starts with the same prefix reports the shared part as
``usage.prompt_tokens_details.cached_tokens``, counted in 128-token steps (1,024, 1,152, ...),
never more than the prompt. Requests are routed by a hash of the prefix and the optional
``prompt_cache_key``, so two requests with the same prefix but different keys may land on
different machines: here they simply miss each other's entries.

The simulator's model works at message boundaries (its tokens are counted per message, see
``simulator.tokens``): the prefix that ends with message ``i`` is a candidate; the longest one
stored within the TTL is the hit. Every boundary of a successful request is stored (or its TTL
restarted), per model and cache key, on the injected clock:

    cache = OpenAIPromptCache(clock)
    cached, keys = cache.lookup("gpt-4o-mini", "key-1", messages)   # changes nothing
    cache.store(keys)                                                # once the request succeeded
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from simulator.tokens import TOKENS_PER_MESSAGE, count_tokens, message_text

#: The shortest prompt prefix OpenAI caches.
MINIMUM_TOKENS = 1024
#: Cache hits are counted in steps of this many tokens beyond the minimum.
INCREMENT_TOKENS = 128
#: How long an unused prefix stays cached (OpenAI: 5 to 10 minutes of inactivity).
TTL_SECONDS = 300.0


def cached_tokens_for(prefix_tokens: int) -> int:
    """Returns what usage reports for a cached prefix of ``prefix_tokens``: 0 under the
    minimum, else the minimum plus whole 128-token steps."""
    if prefix_tokens < MINIMUM_TOKENS:
        return 0
    return MINIMUM_TOKENS + (prefix_tokens - MINIMUM_TOKENS) // INCREMENT_TOKENS * INCREMENT_TOKENS


class OpenAIPromptCache:
    """Cached prompt prefixes of one simulator: entry key → expiry.

    Args:
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._entries: dict[str, float] = {}
        self._purge_at = 1024

    def lookup(self, model: str, cache_key: str | None,
               messages: Sequence[Mapping[str, Any]]) -> tuple[int, tuple[str, ...]]:
        """Works out a request's cached tokens, changing nothing.

        Args:
            model: The model id (entries are per model).
            cache_key: The request's ``prompt_cache_key`` (None: none).
            messages: The chat messages.

        Returns:
            (cached tokens for usage, the entry keys to store if the request succeeds).
        """
        digest = hashlib.sha256(f"{model}\0{cache_key or ''}".encode("utf-8"))
        now = self._clock()
        total, best, keys = 0, 0, []
        for message in messages:
            text = message_text(message.get("content"))
            digest.update(str(message.get("role")).encode("utf-8") + b"\0")
            encoded = text.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
            total += count_tokens(text) + TOKENS_PER_MESSAGE
            if total < MINIMUM_TOKENS:
                continue
            key = digest.hexdigest()
            keys.append(key)
            expiry = self._entries.get(key)
            if expiry is not None and expiry > now:
                best = total
        return cached_tokens_for(best), tuple(keys)

    def store(self, keys: Sequence[str]) -> None:
        """Stores (or refreshes) the prefixes of a successful request."""
        now = self._clock()
        entries = self._entries
        for key in keys:
            entries[key] = now + TTL_SECONDS
        if len(entries) >= self._purge_at:
            for key in [k for k, expiry in entries.items() if expiry <= now]:
                del entries[key]
            self._purge_at = max(1024, 2 * len(entries))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forgets every entry."""
        self._entries.clear()
        self._purge_at = 1024
