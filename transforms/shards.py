"""Reading a written shard, JSONL or Parquet: the one place that knows both layouts.

Result and dead-letter shards (``PREFIX/results-RUNID-SSSSS-of-NNNNN.jsonl`` or ``.parquet``)
are read back by resume (the ids already answered), and by the driver (the ledger's count of
what is on disk, the report's completion times, the progress bar's input count). Paths may be
local or ``gs://`` (Beam's FileSystems).

Example::

    ids = list(shard_values("out/results-x-00000-of-00001.jsonl", "id"))
    count_records("in/tickets.parquet", parquet=True)
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def is_parquet(path: str) -> bool:
    """Whether a shard is Parquet (by its name)."""
    return path.lower().endswith(PARQUET_SUFFIXES)


def _open(path: str, parquet: bool):
    # Parquet needs a seekable, undecoded stream; JSONL may be compressed (by its extension).
    if parquet:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return FileSystems.open(path)


def shard_rows(path: str, fields: Sequence[str], parquet: Optional[bool] = None
               ) -> Iterator[Tuple[Any, ...]]:
    """The values of ``fields`` in each record of a shard (None where a record lacks one).

    JSONL lines that are blank, not JSON or not objects are skipped: the files we write hold
    none, and a reader of them must not fail on a stray one.
    """
    parquet = is_parquet(path) if parquet is None else parquet
    with _open(path, parquet) as handle:
        if parquet:
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
            table = pq.read_table(handle, columns=list(fields))
            yield from zip(*(table.column(f).to_pylist() for f in fields))
            return
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield tuple(record.get(f) for f in fields)


def shard_values(path: str, field: str, parquet: Optional[bool] = None) -> Iterator[Any]:
    """The value of one field in each record of a shard (see :func:`shard_rows`)."""
    for (value,) in shard_rows(path, (field,), parquet):
        yield value


def count_records(path: str, parquet: Optional[bool] = None) -> int:
    """How many records a file holds: Parquet rows (from the footer) or non-blank lines."""
    parquet = is_parquet(path) if parquet is None else parquet
    with _open(path, parquet) as handle:
        if parquet:
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
            return pq.ParquetFile(handle).metadata.num_rows
        total = 0
        tail = b""
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            total += sum(1 for line in lines if line.strip())
        return total + (1 if tail.strip() else 0)
