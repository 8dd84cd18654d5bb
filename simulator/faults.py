"""Which failure, if any, a request gets: random faults by probability, and prompt markers.

Random faults come from one uniform draw per request on an injected ``random.Random``, so a run
with the same ``--seed`` and the same request order fails the same requests. Markers in the prompt
make failures exact instead of probable, for tests that assert retry counts:

    FAIL_N_TIMES:2            the first 2 attempts of this exact request get 503, then success
    INVALID_OUTPUT_N_TIMES:1  the first answer in this conversation is not valid for the schema
    CONTENT_FILTER            always 400 content_filter
    NOT_FOUND                 always 404 (what one request refers to does not exist)

``INVALID_OUTPUT_N_TIMES`` counts per conversation (:func:`conversation_root`), not per exact
request: a client that repairs an invalid answer sends it back with a correction, and that
follow-up must count as the conversation's next attempt.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Sequence

from simulator.config import FAULT_FIELDS, SimulatorConfig

_FAIL_N = re.compile(r"FAIL_N_TIMES:(\d+)")
_INVALID_N = re.compile(r"INVALID_OUTPUT_N_TIMES:(\d+)")


class FaultDraw:
    """Draws at most one random fault per request.

    Args:
        config: Supplies the ``p_*`` probabilities (mutually exclusive, summing to at most 1).
        rng: The random source; one ``random()`` call per ``draw`` when any probability is set.
    """

    def __init__(self, config: SimulatorConfig, rng: random.Random):
        self._rng = rng
        self._table: list[tuple[float, str]] = []
        cumulative = 0.0
        for name in FAULT_FIELDS:
            probability = getattr(config, name)
            if probability > 0:
                cumulative += probability
                self._table.append((cumulative, name[2:]))  # "p_500" -> "500"

    def draw(self) -> str | None:
        """Returns the fault kind for the next request ("500", "hang", ...) or None."""
        if not self._table:
            return None
        u = self._rng.random()
        for threshold, kind in self._table:
            if u < threshold:
                return kind
        return None


@dataclasses.dataclass(frozen=True)
class Markers:
    """The markers found in a prompt."""

    fail_n_times: int = 0
    invalid_output_n_times: int = 0
    content_filter: bool = False
    not_found: bool = False


NO_MARKERS = Markers()


def find_markers(text: str) -> Markers:
    """Returns the markers present in ``text`` (the prompt's message contents joined).

    Args:
        text: The prompt text.

    Returns:
        ``NO_MARKERS`` unless the text contains one.
    """
    # Cheap substring checks first: almost no prompt carries a marker.
    has_n = "_N_TIMES:" in text
    has_filter = "CONTENT_FILTER" in text
    has_not_found = "NOT_FOUND" in text
    if not has_n and not has_filter and not has_not_found:
        return NO_MARKERS
    fail = _FAIL_N.search(text) if has_n else None
    invalid = _INVALID_N.search(text) if has_n else None
    return Markers(fail_n_times=int(fail.group(1)) if fail else 0,
                   invalid_output_n_times=int(invalid.group(1)) if invalid else 0,
                   content_filter=has_filter, not_found=has_not_found)


def conversation_root(messages: Sequence[Any]) -> list:
    """The messages before the first assistant message: what a repair follow-up keeps unchanged.

    Args:
        messages: The request's messages.

    Returns:
        The leading messages up to (not including) the first ``assistant`` one; all of them when
        there is none, so a plain request is its own root.
    """
    root = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            break
        root.append(message)
    return root


class AttemptCounter:
    """Counts attempts per request key, for the ``*_N_TIMES`` markers."""

    def __init__(self) -> None:
        self._attempts: dict[str, int] = {}

    def take(self, key: str) -> int:
        """Returns how many earlier attempts ``key`` had, and counts this one."""
        seen = self._attempts.get(key, 0)
        self._attempts[key] = seen + 1
        return seen

    def clear(self) -> None:
        """Forgets every key."""
        self._attempts.clear()
