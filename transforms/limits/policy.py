"""What the limiter is told and how it behaves: announced limits, the kinds it paces, its policy.

:class:`AnnouncedLimit` is what a provider's answer said of one limit (read by the provider
module); :data:`KINDS` names the limits a request is paced against, in the order a cost vector
lists them (:func:`cost_vector`); :class:`LimitPolicy` holds the pacing and adaptation settings of
:class:`transforms.limits.limiter.AdaptiveRateLimiter`.

Example::

    cost_vector(900, input_tokens=644, output_tokens=256)   # (1.0, 900.0, 644.0, 256.0)
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

#: The limits a request is charged to: one request; its tokens (input + max_tokens, OpenAI's
#: TPM); its input tokens (Anthropic's ITPM); its output tokens (``max_tokens`` reserved,
#: Anthropic's OTPM). ``announced`` limits use the same names.
KINDS = ("requests", "tokens", "input_tokens", "output_tokens")

#: A waiter's cost: the combined tokens alone, or (tokens, input_tokens, output_tokens).
Cost = Union[float, Sequence[float]]


def cost_vector(tokens: Cost, input_tokens: float = 0.0,
                output_tokens: float = 0.0) -> Tuple[float, float, float, float]:
    """What one request costs each of :data:`KINDS`.

    Args:
      tokens: The combined token estimate, or a (tokens, input, output) triple.
      input_tokens, output_tokens: When ``tokens`` is a number.

    Returns:
      (1 request, tokens, input tokens, output tokens).
    """
    if isinstance(tokens, (int, float)):
        return 1.0, float(tokens), float(input_tokens), float(output_tokens)
    total, inputs, outputs = (tuple(tokens) + (0.0, 0.0))[:3]
    return 1.0, float(total), float(inputs), float(outputs)


@dataclasses.dataclass(frozen=True)
class AnnouncedLimit:
    """What a provider's answer announced of one of its limits (any field may be unknown).

    Attributes:
      limit: The whole budget of the limit's window (requests or tokens).
      remaining: What is left of it.
      reset_secs: Seconds until the whole budget is back.
    """
    limit: Optional[float] = None
    remaining: Optional[float] = None
    reset_secs: Optional[float] = None


# The bucket holds this many seconds of its rate at most (about one request): spacing, not bursts.
BURST_SECS = 0.05


@dataclasses.dataclass(frozen=True)
class LimitPolicy:
    """How the limiter paces and adapts (defaults measured with benchmarks/pacing.py).

    Attributes:
      slice_secs: The shortest window a provider enforces its limit over.
      slice_margin_secs: Our window is this much longer, for arrival jitter. A slice edge widens
        it by its ``retry-after`` (how early we were), at least x ``margin_growth``, up to
        ``max_slice_margin_secs``; each success takes ``margin_decay`` of the excess back.
      slice_min_requests, slice_whole_fraction: A slice that holds whole requests is the window
        (at least ``slice_whole_fraction`` of its share once rounded down); one that does not
        gets a window of at least ``slice_min_requests`` mean requests rather than being
        rounded down (:func:`transforms.limits.limiter.slice_length`).
      short_retry_after_secs: A 429 asking for at most this (or nothing) may be a slice edge...
      isolated_429s: ...if at most this many (or ``isolated_fraction`` of the requests sent)
        came in ``learn_window_secs``, at the configured rate. Else: a lower limit.
      learn_window_secs, min_learn_secs: The admitted rate is estimated over this window, once
        there was this much active sending.
      headroom: The rate is set to this fraction of the admitted rate.
      decrease: The rate's factor while nothing is known.
      min_factor: The rate never drops below this fraction of the configured one.
      fast_probe, slow_probe: Growth per success below ``headroom`` x the rate last refused,
        and above it.
      bare_pause_secs: The pause after a 429 without ``retry-after``; doubles until a success.
      max_pause_secs: Cap on any pause (a longer ``retry-after`` is cut to it).
      max_overtakes: How often the first waiter may be passed over by a later, larger request
        that fits the window (or a smaller one that fits while the first does not yet).
      overtake_lookahead: How many waiters are looked at for that.
    """
    slice_secs: float = 1.0
    slice_margin_secs: float = 0.015
    max_slice_margin_secs: float = 0.06
    margin_growth: float = 1.5
    margin_decay: float = 0.004
    slice_min_requests: float = 10.0
    slice_whole_fraction: float = 0.95
    short_retry_after_secs: float = 2.0
    isolated_429s: int = 2
    isolated_fraction: float = 0.03
    learn_window_secs: float = 10.0
    min_learn_secs: float = 2.0
    headroom: float = 0.95
    decrease: float = 0.5
    min_factor: float = 0.02
    fast_probe: float = 0.01
    slow_probe: float = 0.0005
    bare_pause_secs: float = 0.5
    max_pause_secs: float = 60.0
    max_overtakes: int = 2
    overtake_lookahead: int = 64
