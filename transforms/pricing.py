"""Prices per model and the cost of one response.

A shipped table (``transforms/pricing.json``: USD per 1M input, cached input and output tokens)
can be replaced with ``--pricing_file``. The driver looks the configured model up once and hands
the :class:`Price` to the workers inside the LLM config, so workers never read files for it.

Example::

    price, known = load_pricing(None).lookup("gpt-4o-mini-2024-07-18")
    price.cost(prompt_tokens=1200, completion_tokens=300, cached_tokens=0)  # USD
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


# The Batch API's discount where pricing.json gives no batch price (OpenAI's: half the price).
BATCH_DISCOUNT = 0.5


def batch_price(price: Price) -> Price:
    """The price of the same tokens through the provider's Batch API."""
    return Price(input=price.input * BATCH_DISCOUNT,
                 cached_input=price.cached_input * BATCH_DISCOUNT,
                 output=price.output * BATCH_DISCOUNT)


@dataclasses.dataclass(frozen=True)
class Pricing:
    """A model → Price table."""
    models: Dict[str, Price]

    def lookup(self, model: str) -> Tuple[Price, bool]:
        """The price of ``model``: exact name, else the longest matching prefix.

        Returns:
          (price, known); an unknown model prices at 0 with known False.
        """
        if model in self.models:
            return self.models[model], True
        prefixes = [name for name in self.models if model.startswith(name)]
        if prefixes:
            return self.models[max(prefixes, key=len)], True
        return Price(), False


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
    table = {}
    for name, entry in models.items():
        try:
            table[name] = Price(input=float(entry["input"]),
                                cached_input=float(entry.get("cached_input", entry["input"])),
                                output=float(entry["output"]))
        except (KeyError, TypeError, ValueError):
            raise PricingError(f"pricing file {path!r}: model {name!r} needs numeric 'input' "
                               "and 'output' (and optionally 'cached_input') prices") from None
        if min(table[name].input, table[name].cached_input, table[name].output) < 0:
            raise PricingError(f"pricing file {path!r}: model {name!r} has a negative price")
    return Pricing(table)
