"""``--sample N``: a deterministic sample of N valid tickets, spread over the whole input.

The sample is the N tickets whose ids have the smallest stable hash (the first 8 bytes of the
SHA-256 of the id): the same N on every runner, in every run and whatever the order of the
input, and spread over the whole input rather than its first lines. The others are counted
``not_sampled`` (the ledger keeps them) and go no further.

Example::

    sampled = tickets | "SampleTickets" >> SampleTickets(50)
"""

from __future__ import annotations

import hashlib
from typing import Tuple

import apache_beam as beam

from transforms.metrics import TicketflowMetrics


def sample_key(ticket_id: str) -> Tuple[bytes, str]:
    """A ticket's place in the sampling order (ties, impossible in practice, broken by the id)."""
    return hashlib.sha256(ticket_id.encode("utf-8")).digest()[:8], ticket_id


class _KeepSampledFn(beam.DoFn):
    def setup(self):
        self._metrics = TicketflowMetrics()

    def process(self, ticket, chosen):
        if ticket.id in chosen:
            yield ticket
        else:
            self._metrics.inc("not_sampled")


class SampleTickets(beam.PTransform):
    """Keeps the ``size`` tickets with the smallest :func:`sample_key`.

    Args:
      size: How many tickets to keep (all of them when the input has fewer).
    """

    def __init__(self, size: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"a sample holds at least one ticket, not {size}")
        self._size = size

    def expand(self, tickets):
        chosen = (tickets
                  | "SampleKeys" >> beam.Map(lambda t: sample_key(t.id))
                  | "SmallestKeys" >> beam.combiners.Top.Smallest(self._size)
                  | "ChosenIds" >> beam.Map(lambda keys: frozenset(i for _, i in keys)))
        return tickets | "KeepSampled" >> beam.ParDo(
            _KeepSampledFn(), chosen=beam.pvalue.AsSingleton(chosen))
