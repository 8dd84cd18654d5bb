"""Keying and batching: tickets → ``(key, [Ticket, ...])`` batches.

Tickets are keyed by ``--key_field`` (for example ``priority``) or, by default, by a stable hash
shard of the id; ``GroupIntoBatches.WithShardedKey`` then batches per key and spreads a hot key
over the workers' threads. ``max_buffering_secs`` bounds how long a partial batch waits (it matters
for streaming inputs and for the tail of a batch job).

Example::

    batches = tickets | "Batch" >> BatchTickets(BatchConfig(batch_size=50))
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Optional, Tuple

import apache_beam as beam

from transforms.records import Ticket


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """How tickets are keyed and batched.

    Attributes:
      batch_size: Tickets per batch.
      max_buffering_secs: Longest a partial batch waits; 0 or None: until the key's input ends.
      key_field: Input field to key by; None: a stable hash shard of the id.
      num_shards: Number of hash shards when keying by id.
    """
    batch_size: int = 50
    max_buffering_secs: Optional[float] = None
    key_field: Optional[str] = None
    num_shards: int = 16


def stable_shard(ticket_id: str, num_shards: int) -> int:
    """A shard number for an id that is the same in every process and every run."""
    return zlib.crc32(ticket_id.encode("utf-8")) % max(1, num_shards)


def key_of(ticket: Ticket, config: BatchConfig) -> str:
    """The batching key of one ticket."""
    if config.key_field:
        value = ticket.fields.get(config.key_field)
        return f"{config.key_field}={'' if value is None else value}"
    return f"shard-{stable_shard(ticket.id, config.num_shards):04d}"


class BatchTickets(beam.PTransform):
    """Keys tickets and groups them into batches per (sharded) key.

    Args:
      config: Batch size, buffering time and keying.
    """

    def __init__(self, config: BatchConfig):
        super().__init__()
        self._config = config

    def expand(self, tickets):
        config = self._config
        buffering = config.max_buffering_secs or None
        return (
            tickets
            | "KeyTickets" >> beam.Map(lambda t: (key_of(t, config), t)).with_output_types(
                Tuple[str, Any])
            | "GroupIntoBatches" >> beam.GroupIntoBatches.WithShardedKey(
                config.batch_size, max_buffering_duration_secs=buffering))
