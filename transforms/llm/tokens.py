"""Prompt tokens before the call: an estimate the limiter charges, corrected by the answer.

tiktoken cannot download its encodings everywhere ticketflow runs, so a request's prompt is
estimated as characters / chars-per-token + 3 per message + 3, and the ratio is learnt from the
``usage`` the provider reports. Providers charge ``prompt + max_tokens`` against a token limit at
admission; the limiter charges the same and later corrects only the prompt part.

Example::

    estimator = TokenEstimator()
    tokens = estimator.estimate(messages) + schema_tokens
    estimator.learn(messages, usage_prompt_tokens)
"""

from __future__ import annotations

import math
from typing import Dict, List

DEFAULT_CHARS_PER_TOKEN = 4.0


def estimate_prompt_tokens(messages: List[Dict[str, str]],
                           chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """Prompt tokens of ``messages``: characters / chars_per_token, plus per-message overhead."""
    chars = sum(len(m["content"]) for m in messages)
    return int(math.ceil(chars / chars_per_token)) + 3 * len(messages) + 3


class TokenEstimator:
    """Estimates prompt tokens and learns the characters-per-token ratio from real usage.

    Args:
      chars_per_token: The starting ratio.
      weight: How much one observation moves the ratio (an exponential moving average).
    """

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN, weight: float = 0.1):
        self.chars_per_token = chars_per_token
        self._weight = weight

    def estimate(self, messages: List[Dict[str, str]]) -> int:
        return estimate_prompt_tokens(messages, self.chars_per_token)

    def learn(self, messages: List[Dict[str, str]], prompt_tokens: int) -> None:
        """Moves the ratio towards what the provider reported for ``messages``.

        The schema's share (when a response schema is sent) is left in the reported count: a
        provider that counts it makes the learnt ratio lower, so estimates err on the high (safe)
        side.
        """
        if prompt_tokens <= 0:
            return
        chars = sum(len(m["content"]) for m in messages)
        ratio = chars / max(1, prompt_tokens - 3 * len(messages) - 3)
        self.chars_per_token = ((1 - self._weight) * self.chars_per_token
                                + self._weight * max(1.0, ratio))


class ChargedShare:
    """What a limit is really charged, as a learnt share of what a request could cost.

    The input-token limit of a provider whose prompt-cache reads are free is charged only the
    uncached part of a prompt; the output-token limit only the tokens produced, not
    ``max_tokens``. The limiter reserves ``share x`` the upper bound (1 until an answer came,
    so the first requests reserve it all) and settles with the real charge, so its one-second
    window is not held for every request in flight by reservations that come back.

    Args:
      weight: How much each answer moves the share (an exponential moving average).
    """

    def __init__(self, weight: float = 0.1):
        self.weight = weight
        self.value = 1.0

    def of(self, bound: float) -> float:
        """The reservation for a request whose charge is at most ``bound``."""
        return bound * self.value

    def learn(self, charged: float, bound: float) -> None:
        """An answer was charged ``charged`` of at most ``bound``."""
        if bound > 0:
            share = min(1.0, max(0.0, charged / bound))
            self.value += self.weight * (share - self.value)
