"""The batch driver's decisions, as pure functions (tested without a provider or a clock).

* :func:`effective_limit`, :func:`may_submit` — waves: a part is created only while the tokens
  of the job's running batches plus its own fit the enqueued-token limit (``--batch_max_enqueued
  _tokens``, or the one learnt from a ``token_limit_exceeded``); with nothing running it is
  always tried (the provider is the judge);
* :func:`learn_limit` — what a ``token_limit_exceeded`` teaches: the limit the provider's
  message states, else less than what was enqueued plus the part;
* :func:`line_fate` — what becomes of one line of a finished batch: kept (an answer, or an
  error online would not retry), sent again in the next round, or left to the online path;
* :func:`past_deadline` — ``--batch_deadline_secs``, counted from the job's start (so a resumed
  or a collect run keeps the first run's deadline).

Example::

    if may_submit(part.tokens, enqueued, effective_limit(flag, learnt)): create(part)
    fate = line_fate(outcome.kind, round_no=2, max_rounds=7, late=False)   # FINAL | RETRY | ...
"""

from __future__ import annotations

import re
from typing import Optional

from transforms.llm.providers import OK, PERMANENT

FINAL = "final"
RETRY = "retry"
LEFTOVER = "leftover"

_LIMIT = re.compile(r"Limit:\s*([\d,]+)")


def effective_limit(configured: int, learnt: int) -> int:
    """The enqueued-token limit to plan with: the smaller known one; 0 when none is known."""
    known = [v for v in (configured, learnt) if v and v > 0]
    return min(known) if known else 0


def may_submit(tokens: int, enqueued: int, limit: int) -> bool:
    """Whether a part of ``tokens`` may be created while ``enqueued`` tokens of ours run."""
    return limit <= 0 or enqueued == 0 or enqueued + tokens <= limit


def learn_limit(message: str, enqueued_others: int, tokens: int) -> int:
    """The limit a ``token_limit_exceeded`` failure reveals.

    Args:
      message: The provider's error message (OpenAI's states "Limit: 2,000,000 enqueued tokens").
      enqueued_others: Tokens of the job's other batches running when it failed.
      tokens: The failed part's tokens.

    Returns:
      The stated limit; else ``enqueued_others + tokens - 1`` (it did not fit), at least 1.
    """
    match = _LIMIT.search(message or "")
    if match:
        return max(1, int(match.group(1).replace(",", "")))
    return max(1, enqueued_others + tokens - 1)


def line_fate(kind: str, round_no: int, max_rounds: int, late: bool) -> str:
    """What becomes of one line of a finished batch.

    Args:
      kind: The line's class (``ok``, ``permanent`` or ``retryable``).
      round_no: The round it was submitted in (1-based).
      max_rounds: ``--max_retries`` + 1.
      late: The deadline has passed: nothing is submitted again.

    Returns:
      FINAL (its outcome is the ticket's: an answer, a permanent error, or a retryable one after
      the last round: ``retries_exhausted``), RETRY (the next round), or LEFTOVER (answered
      online: the deadline came first).
    """
    if kind in (OK, PERMANENT):
        return FINAL
    if late:
        return LEFTOVER
    return FINAL if round_no >= max_rounds else RETRY


def past_deadline(started_at: float, deadline_secs: Optional[float], now: float) -> bool:
    """Whether ``--batch_deadline_secs`` (0 or None: none) has passed since the job started."""
    return bool(deadline_secs) and now >= started_at + deadline_secs
