"""Prices per model and the cost of one response.

A shipped table (``transforms/pricing.json``: USD per 1M input, cached input and output tokens)
can be replaced with ``--pricing_file``. The driver looks the configured model up once and hands
the :class:`Price` to the workers inside the LLM config, so workers never read files for it.

Batch API prices (``--api batch``): a model's entry may hold its own ``"batch": {"input", ...}``
prices; otherwise a top-level ``"batch_multiplier"`` (the shipped file: 0.5, OpenAI's half price)
scales its online prices; a file with neither prices batch answers at the online price, so a
user's pricing file written before batch prices existed never under-states a cost.

Example::

    pricing = load_pricing(None)
    price, known = pricing.lookup("gpt-4o-mini-2024-07-18")
    price.cost(prompt_tokens=1200, completion_tokens=300, cached_tokens=0)  # USD
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
    """USD per one million tokens."""
    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one response; cached prompt tokens are billed at the cached-input price."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        return ((prompt_tokens - cached) * self.input + cached * self.cached_input
                + completion_tokens * self.output) / 1_000_000

    def scaled(self, factor: float) -> "Price":
        """Every price times ``factor``."""
        return Price(self.input * factor, self.cached_input * factor, self.output * factor)


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
        price = Price(input=float(entry["input"]),
                      cached_input=float(entry.get("cached_input", entry["input"])),
                      output=float(entry["output"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PricingError(f"pricing file {path!r}: model {name!r} needs numeric 'input' "
                           "and 'output' (and optionally 'cached_input') prices") from None
    if min(price.input, price.cached_input, price.output) < 0:
        raise PricingError(f"pricing file {path!r}: model {name!r} has a negative price")
    return price
