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
  or a collect run keeps the first run's deadline);
* :func:`cancel_wait_over` — ``--batch_cancel_wait_secs``: how long a batch cancelled at the
  deadline may take to end, counted from its cancel (the journal's time of it, so a resumed run
  does not wait again from zero); then its tickets are answered online without it;
* :func:`next_poll_in` — how long to sleep before the next poll: ``--batch_poll_secs``, cut
  short so that the deadline and the end of every cancel wait are acted on when they come.

Example::

    if may_submit(part.tokens, enqueued, effective_limit(flag, learnt)): create(part)
    fate = line_fate(outcome.kind, round_no=2, max_rounds=7, late=False)   # FINAL | RETRY | ...
    if cancel_wait_over(part.cancelling_at, wait_secs=600, now=clock()): abandon(part)
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

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


def cancel_wait_over(cancelling_at: float, wait_secs: float, now: float) -> bool:
    """Whether a batch cancelled at ``cancelling_at`` has had its ``--batch_cancel_wait_secs``.

    A cancelled batch ends ``cancelled`` once the provider finalized it (OpenAI: up to 10
    minutes); until then its answers cannot be downloaded. Past the wait, the driver stops
    waiting: its tickets are answered online, and what it still answers is reported as possibly
    billed twice (docs/batch.md, "The deadline").

    Args:
      cancelling_at: When the cancel was asked (the journal's time of the ``cancelling`` event).
      wait_secs: ``--batch_cancel_wait_secs`` (0: do not wait beyond the poll after the cancel).
      now: The current time, on the same clock.

    Returns:
      True once ``now >= cancelling_at + wait_secs``.
    """
    return now >= cancelling_at + max(0.0, wait_secs)


def next_poll_in(now: float, poll_secs: float, due: Iterable[float]) -> float:
    """Seconds to sleep before the next poll.

    Args:
      now: The current time.
      poll_secs: ``--batch_poll_secs``.
      due: Moments something must be done at (the deadline, the end of each cancel wait); those
        not after ``now`` are ignored (they were acted on already).

    Returns:
      ``poll_secs``, or less when a due moment comes first.
    """
    ahead = [when - now for when in due if when > now]
    return min([poll_secs] + ahead)
