"""A model of Anthropic's prompt cache: prefixes written at ``cache_control`` breakpoints, read
later within their TTL.

A prompt is a sequence of blocks in Anthropic's order: tools, then system blocks, then the
messages' content blocks. A block that carries ``cache_control`` is a breakpoint: the prefix that
ends with it may be cached, for 5 minutes (the default) or 1 hour. A request first looks for the
longest prefix already cached, at its breakpoints and at the 20 block boundaries before each one
(Anthropic's lookback); those tokens are ``cache_read_input_tokens``. The prefixes at its
breakpoints beyond that are written (``cache_creation_input_tokens``, split by TTL); the rest is
``input_tokens``. A prefix shorter than the model's minimum is never cached. Each hit refreshes
the entry's TTL. Entries live in one simulator instance, per model, on the injected clock:

    cache = PromptCache(clock)
    plan = cache.plan("claude-sonnet-4-6", blocks)   # blocks: [Block(key_bytes, tokens, ttl)]
    plan.read_tokens, plan.creation_tokens          # what usage reports
    cache.commit(plan)                              # only once the request has succeeded

The ``plan`` is pure (rate limits are decided from it before anything is written); ``commit``
makes it true.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence

#: TTL values of ``cache_control``, in seconds.
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
#: How many block boundaries before a breakpoint are checked for a hit.
LOOKBACK_BLOCKS = 20


def minimum_cacheable_tokens(model: str) -> int:
    """Returns the shortest prefix the model caches: 2048 tokens for Haiku models and Gemini
    Pro models (Gemini's implicit cache: 2,048 for 2.5 Pro, 1,024 for 2.5 Flash), else 1024.

    Args:
        model: The request's model id.

    Returns:
        The minimum, in the simulator's tokens.
    """
    name = model.lower()
    if "haiku" in name or (name.startswith("gemini") and "pro" in name):
        return 2048
    return 1024


@dataclasses.dataclass(frozen=True)
class Block:
    """One cacheable block of a prompt.

    Attributes:
        key: Its canonical bytes without ``cache_control`` (what makes two prefixes equal).
        tokens: Its tokens, as the request's usage counts them.
        ttl: Seconds, if the block carries ``cache_control`` (a breakpoint); None otherwise.
    """

    key: bytes
    tokens: int
    ttl: float | None = None


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """What a request reads from and writes to the cache.

    Attributes:
        read_tokens: The cached prefix's tokens (``cache_read_input_tokens``).
        write_5m_tokens: Tokens written with a 5-minute TTL.
        write_1h_tokens: Tokens written with a 1-hour TTL.
        writes: (entry key, TTL seconds) to store on commit.
        refreshes: Entry keys whose TTL a commit restarts (the hit).
    """

    read_tokens: int = 0
    write_5m_tokens: int = 0
    write_1h_tokens: int = 0
    writes: tuple[tuple[str, float], ...] = ()
    refreshes: tuple[str, ...] = ()

    @property
    def creation_tokens(self) -> int:
        """All tokens written (``cache_creation_input_tokens``)."""
        return self.write_5m_tokens + self.write_1h_tokens


NO_CACHE = CachePlan()


class PromptCache:
    """The cached prefixes of one simulator: entry key → (expiry, TTL).

    Args:
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._entries: dict[str, tuple[float, float]] = {}
        self._purge_at = 1024

    def plan(self, model: str, blocks: Sequence[Block]) -> CachePlan:
        """Works out the request's cache reads and writes, changing nothing.

        Args:
            model: The model id (entries are per model).
            blocks: The prompt's blocks in order.

        Returns:
            The plan; ``NO_CACHE`` when no block is a breakpoint.
        """
        breakpoints = [i for i, block in enumerate(blocks) if block.ttl is not None]
        if not breakpoints:
            return NO_CACHE
        minimum = minimum_cacheable_tokens(model)
        now = self._clock()
        # Running digests: keys[i] identifies the prefix that ends with block i.
        digest = hashlib.sha256(model.encode("utf-8"))
        keys, totals, total = [], [], 0
        for block in blocks:
            digest.update(len(block.key).to_bytes(8, "big"))
            digest.update(block.key)
            keys.append(digest.hexdigest())
            total += block.tokens
            totals.append(total)
        candidates = sorted({i for b in breakpoints
                             for i in range(max(0, b - LOOKBACK_BLOCKS + 1), b + 1)}, reverse=True)
        hit = -1
        for i in candidates:
            entry = self._entries.get(keys[i])
            if entry is not None and entry[0] > now and totals[i] >= minimum:
                hit = i
                break
        read = totals[hit] if hit >= 0 else 0
        written = {300.0: 0, 3600.0: 0}
        writes = []
        done = read
        for b in breakpoints:
            if b <= hit or totals[b] < minimum:
                continue
            ttl = blocks[b].ttl
            written[ttl] += totals[b] - done
            done = totals[b]
            writes.append((keys[b], ttl))
        return CachePlan(read_tokens=read, write_5m_tokens=written[300.0],
                         write_1h_tokens=written[3600.0], writes=tuple(writes),
                         refreshes=(keys[hit],) if hit >= 0 else ())

    def commit(self, plan: CachePlan) -> None:
        """Stores the plan's writes and restarts the TTL of its hit."""
        if plan is NO_CACHE:
            return
        now = self._clock()
        entries = self._entries
        for key in plan.refreshes:
            entry = entries.get(key)
            if entry is not None:
                entries[key] = (now + entry[1], entry[1])
        for key, ttl in plan.writes:
            entries[key] = (now + ttl, ttl)
        if len(entries) >= self._purge_at:
            for key in [k for k, (expiry, _) in entries.items() if expiry <= now]:
                del entries[key]
            self._purge_at = max(1024, 2 * len(entries))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forgets every entry."""
        self._entries.clear()
        self._purge_at = 1024
