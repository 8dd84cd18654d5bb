"""Prices per model and the cost of one response.

A shipped table (``transforms/pricing.json``: USD per 1M input, cached input and output tokens)
can be replaced with ``--pricing_file``. The driver looks the configured model up once and hands
the :class:`Price` to the workers inside the LLM config, so workers never read files for it.

Prompt caching: ``cached_input`` is the price of a cache read (Anthropic: 0.1x input; OpenAI and
Gemini: their cached-input prices); ``cache_write_5m`` and ``cache_write_1h`` the price of a token
written to the cache with that TTL (Anthropic: 1.25x and 2x input; OpenAI and Gemini's implicit
caches charge no surcharge, so there it is the input price). A file without them prices writes as
plain input and reads as input (``cached_input`` defaults to ``input``), never under-stating a
cost. :meth:`Price.cost` splits a prompt into reads, writes and plain input;
:meth:`Price.cache_saving` is what caching saved against sending the same tokens as plain input.

Batch API prices (``--api batch``): a model's entry may hold its own ``"batch": {"input", ...}``
prices; otherwise a top-level ``"batch_multiplier"`` (the shipped file: 0.5, OpenAI's half price)
scales its online prices; a file with neither prices batch answers at the online price, so a
user's pricing file written before batch prices existed never under-states a cost.

Example::

    pricing = load_pricing(None)
    price, known = pricing.lookup("gpt-4o-mini-2024-07-18")
    price.cost(prompt_tokens=1200, completion_tokens=300, cached_tokens=0)  # USD
    price.cost(3200, 300, cached_tokens=2000)                       # 2000 read from the cache
    price.cache_saving(cached_tokens=2000, cache_write_tokens=0)    # USD saved by it
    batch_price, _ = pricing.lookup_batch("gpt-4o-mini")                    # half of it
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

DEFAULT_PRICING_FILE = os.path.join(os.path.dirname(__file__), "pricing.json")


class PricingError(ValueError):
    """The pricing file is unreadable or malformed."""


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per one million tokens.

    Attributes:
      input: A plain (uncached) prompt token.
      cached_input: A prompt token read from the provider's prompt cache.
      output: A completion token.
      cache_write_5m: A prompt token written to the cache with the 5-minute TTL (None: input).
      cache_write_1h: The same with the 1-hour TTL (None: input).
    """
    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    cache_write_5m: Optional[float] = None
    cache_write_1h: Optional[float] = None

    def write_price(self, ttl: str = "5m") -> float:
        """USD per 1M tokens written to the cache with ``ttl`` (``5m`` or ``1h``)."""
        value = self.cache_write_1h if ttl == "1h" else self.cache_write_5m
        return self.input if value is None else value

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             cache_write_tokens: int = 0, ttl: str = "5m") -> float:
        """USD for one response.

        Args:
          prompt_tokens: Every prompt token (cache reads and writes included).
          completion_tokens: Completion tokens.
          cached_tokens: Prompt tokens read from the cache (the cached-input price).
          cache_write_tokens: Prompt tokens written to the cache (the write price of ``ttl``).
          ttl: The cache lifetime the writes were made with.
        """
        prompt = max(prompt_tokens, 0)
        cached = min(max(cached_tokens, 0), prompt)
        written = min(max(cache_write_tokens, 0), prompt - cached)
        return ((prompt - cached - written) * self.input + cached * self.cached_input
                + written * self.write_price(ttl) + completion_tokens * self.output) / 1_000_000

    def cache_saving(self, cached_tokens: int, cache_write_tokens: int = 0,
                     ttl: str = "5m") -> float:
        """USD the cache saved: those tokens as plain input minus what they cost (negative when
        the writes' surcharge outweighs the reads)."""
        cached, written = max(cached_tokens, 0), max(cache_write_tokens, 0)
        return (cached * (self.input - self.cached_input)
                + written * (self.input - self.write_price(ttl))) / 1_000_000

    def scaled(self, factor: float) -> "Price":
        """Every price times ``factor``."""
        return Price(self.input * factor, self.cached_input * factor, self.output * factor,
                     None if self.cache_write_5m is None else self.cache_write_5m * factor,
                     None if self.cache_write_1h is None else self.cache_write_1h * factor)


# OpenAI's Batch API discount: half the price.
BATCH_DISCOUNT = 0.5


def batch_price(price: Price) -> Price:
    """OpenAI's rule: the same tokens through the Batch API at half the price. (What a run
    charges is the pricing file's: :meth:`Pricing.lookup_batch`.)"""
    return price.scaled(BATCH_DISCOUNT)


@dataclasses.dataclass(frozen=True)
class Pricing:
    """A model → Price table, and the Batch API's prices.

    Attributes:
      models: Online prices.
      batch: Batch API prices given explicitly per model.
      batch_multiplier: Scales online prices for a model without explicit batch prices.
    """
    models: Dict[str, Price]
    batch: Dict[str, Price] = dataclasses.field(default_factory=dict)
    batch_multiplier: float = 1.0

    def _name(self, model: str) -> Optional[str]:
        """The table's name for ``model``: exact, else the longest matching prefix."""
        if model in self.models:
            return model
        prefixes = [name for name in self.models if model.startswith(name)]
        return max(prefixes, key=len) if prefixes else None

    def lookup(self, model: str) -> Tuple[Price, bool]:
        """The price of ``model``: exact name, else the longest matching prefix.

        Returns:
          (price, known); an unknown model prices at 0 with known False.
        """
        name = self._name(model)
        return (self.models[name], True) if name is not None else (Price(), False)

    def lookup_batch(self, model: str) -> Tuple[Price, bool]:
        """The Batch API price of ``model`` (see the module docstring for the rule).

        Returns:
          (price, known), as :meth:`lookup`.
        """
        name = self._name(model)
        if name is None:
            return Price(), False
        if name in self.batch:
            return self.batch[name], True
        return self.models[name].scaled(self.batch_multiplier), True


def load_pricing(path: Optional[str] = None) -> Pricing:
    """Loads a pricing file (the shipped one when ``path`` is None).

    Raises:
      PricingError: with a message naming the file and the problem.
    """
    path = path or DEFAULT_PRICING_FILE
    try:
        from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
        with FileSystems.open(path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, IOError) as exc:
        raise PricingError(f"cannot read pricing file {path!r}: {exc}") from None
    except ValueError as exc:
        raise PricingError(f"pricing file {path!r} is not valid JSON: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise PricingError(f"pricing file {path!r} needs an object {{\"models\": {{name: "
                           "{\"input\": ..., \"cached_input\": ..., \"output\": ...}}}}")
    table, batch = {}, {}
    for name, entry in models.items():
        table[name] = _price(path, name, entry)
        if isinstance(entry, dict) and entry.get("batch") is not None:
            batch[name] = _price(path, f"{name}.batch", entry["batch"])
    multiplier = data.get("batch_multiplier", 1.0)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) \
            or not 0 < multiplier <= 1:
        raise PricingError(f"pricing file {path!r}: 'batch_multiplier' must be a number in "
                           f"(0, 1], got {multiplier!r}")
    return Pricing(table, batch, float(multiplier))


def _price(path: str, name: str, entry) -> Price:
    try:
        writes = {key: (None if entry.get(key) is None else float(entry[key]))
                  for key in ("cache_write_5m", "cache_write_1h")}
        price = Price(input=float(entry["input"]),
                      cached_input=float(entry.get("cached_input", entry["input"])),
                      output=float(entry["output"]), **writes)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PricingError(f"pricing file {path!r}: model {name!r} needs numeric 'input' "
                           "and 'output' (and optionally 'cached_input', 'cache_write_5m', "
                           "'cache_write_1h') prices") from None
    values = [price.input, price.cached_input, price.output, price.cache_write_5m,
              price.cache_write_1h]
    if min(v for v in values if v is not None) < 0:
        raise PricingError(f"pricing file {path!r}: model {name!r} has a negative price")
    return price
