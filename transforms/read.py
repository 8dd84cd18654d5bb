"""Reading tickets: JSONL or Parquet files, local paths, globs and ``gs://``.

``ReadTickets`` matches the pattern with Beam's FileSystems (so ``gs://`` works wherever Beam's GCP
extra is installed), reads each file and emits one :class:`RawRecord` per non-blank line (JSONL)
or per row (Parquet), with the file and the 1-based line or row number, so that a bad record's
dead letter can say exactly where it came from. Parsing is validation's job (``transforms.validate``).

A chunked run (``pipeline/chunks.py``) passes ``pieces`` instead: each :class:`Piece` is a byte
range of a JSONL file (cut at line ends) or a row range of a Parquet file, with the file's line
or row number where it starts, so records keep their global line numbers.

Example::

    raw = p | "ReadTickets" >> ReadTickets("gs://bucket/tickets/*.jsonl")
    raw = p | "ReadTickets" >> ReadTickets(pattern, pieces=[Piece("a.jsonl", 0, 4096, 1)])
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment

from transforms.metrics import TicketflowMetrics
from transforms.shards import is_parquet

FORMAT_AUTO = "auto"
FORMAT_JSONL = "jsonl"
FORMAT_PARQUET = "parquet"
FORMATS = (FORMAT_AUTO, FORMAT_JSONL, FORMAT_PARQUET)


class RawRecord(NamedTuple):
    """One input record before validation.

    Attributes:
      source: The file it came from.
      line: 1-based line (JSONL) or row (Parquet) number.
      value: The line's text (JSONL) or the row as a dict (Parquet).
      decode_error: Set when the line's bytes were not UTF-8 (value then holds a lossy decode).
      origin: In a streaming job, where and when the record arrived (see
        :attr:`transforms.records.Ticket.origin`); None in a batch job.
    """
    source: str
    line: int
    value: Union[str, dict]
    decode_error: Optional[str] = None
    origin: Optional[dict] = None


class Piece(NamedTuple):
    """A slice of one input file, read as one element of a chunked run.

    Attributes:
      path: The file.
      start: JSONL: the byte offset of a line's start; Parquet: the 0-based first row.
      end: JSONL: the byte offset after a line's end; Parquet: the row after the last one.
      first_line: The 1-based line (JSONL) or row (Parquet) number at ``start``.
    """
    path: str
    start: int
    end: int
    first_line: int


def format_of(path: str, forced: str = FORMAT_AUTO) -> str:
    """The format of one file: ``forced`` unless auto, else by extension (``.parquet`` or JSONL)."""
    if forced != FORMAT_AUTO:
        return forced
    name = path.lower()
    for compressed in (".gz", ".bz2", ".zst", ".deflate"):
        if name.endswith(compressed):
            name = name[: -len(compressed)]
    return FORMAT_PARQUET if is_parquet(name) else FORMAT_JSONL


def json_safe(value: Any) -> Any:
    """Turns values Parquet may hold (timestamps, decimals, bytes, NaN, numpy) into JSON values."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # pyarrow returns map columns as lists of (key, value) tuples; lists stay lists.
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return str(value)


def iter_jsonl(handle, path: str, first_line: int = 1,
               length: Optional[int] = None) -> Iterator[RawRecord]:
    """RawRecords of a JSONL stream (binary), skipping blank lines.

    Args:
      first_line: The line number of the stream's current position.
      length: Read only this many bytes from the current position (a :class:`Piece`, whose
        end is a line end); None: to the end.
    """
    left = length
    for number, line in enumerate(handle, start=first_line):
        if left is not None:
            if left <= 0:
                return
            left -= len(line)
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            yield RawRecord(path, number, line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield RawRecord(path, number, line.decode("utf-8", errors="replace"),
                            f"not UTF-8 at byte {exc.start}")


def iter_parquet(handle, path: str) -> Iterator[RawRecord]:
    """RawRecords of a Parquet file (a seekable binary stream), one per row."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    number = 0
    for batch in pq.ParquetFile(handle).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(path, number, json_safe(row))


def iter_parquet_rows(handle, path: str, start: int, end: int) -> Iterator[RawRecord]:
    """RawRecords of rows ``[start, end)`` (0-based) of a Parquet file; only the row groups
    that hold them are decoded."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    parquet = pq.ParquetFile(handle)
    groups, first, offset = [], None, 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if offset + rows > start and offset < end:
            groups.append(group)
            first = offset if first is None else first
        offset += rows
    if not groups:
        return
    at = first  # the 0-based row number of the batch's first row
    for batch in parquet.iter_batches(batch_size=4096, row_groups=groups):
        low, high = max(0, start - at), min(batch.num_rows, end - at)
        if low < high:
            for i, row in enumerate(batch.slice(low, high - low).to_pylist()):
                yield RawRecord(path, at + low + i + 1, json_safe(row))
        at += batch.num_rows
        if at >= end:
            return


def iter_piece(piece: Piece, input_format: str = FORMAT_AUTO) -> Iterator[RawRecord]:
    """The RawRecords of one :class:`Piece` (an uncompressed file, local or gs://)."""
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    with FileSystems.open(piece.path,
                          compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if format_of(piece.path, input_format) == FORMAT_PARQUET:
            yield from iter_parquet_rows(handle, piece.path, piece.start, piece.end)
        else:
            handle.seek(piece.start)
            yield from iter_jsonl(handle, piece.path, piece.first_line, piece.end - piece.start)


def iter_file(path: str, input_format: str = FORMAT_AUTO) -> Iterator[RawRecord]:
    """Reads one file outside a pipeline (e.g. for ``--estimate``), local or gs://."""
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    if format_of(path, input_format) == FORMAT_PARQUET:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            yield from iter_parquet(handle, path)
    else:
        with FileSystems.open(path) as handle:
            yield from iter_jsonl(handle, path)


class _ReadFileFn(beam.DoFn):
    """Reads one matched file into RawRecords."""

    def __init__(self, input_format: str):
        self._format = input_format

    def setup(self):
        self._metrics = TicketflowMetrics()

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        if format_of(path, self._format) == FORMAT_PARQUET:
            with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                records = iter_parquet(handle, path)
                yield from self._counted(records)
        else:
            with readable.open() as handle:
                yield from self._counted(iter_jsonl(handle, path))

    def _counted(self, records):
        for record in records:
            self._metrics.inc("tickets_read")
            yield record


class _ReadPieceFn(_ReadFileFn):
    """Reads one :class:`Piece` (a chunked run's slice of a file) into RawRecords."""

    def process(self, piece: Piece):  # pylint: disable=arguments-renamed
        yield from self._counted(iter_piece(piece, self._format))


class ReadTickets(beam.PTransform):
    """Matches ``pattern`` and reads every file into :class:`RawRecord` elements.

    Args:
      pattern: A path, glob or ``gs://`` pattern (comma-separated for several).
      input_format: ``auto`` (by extension), ``jsonl`` or ``parquet``.
      pieces: Read only these slices of the matched files (a chunk of a chunked run).
    """

    def __init__(self, pattern: str, input_format: str = FORMAT_AUTO,
                 pieces: Optional[Sequence[Piece]] = None):
        super().__init__()
        if input_format not in FORMATS:
            raise ValueError(f"input_format must be one of {FORMATS}, not {input_format!r}")
        self._patterns = [p.strip() for p in pattern.split(",") if p.strip()]
        self._format = input_format
        self._pieces = None if pieces is None else list(pieces)

    def expand(self, pbegin):
        if self._pieces is not None:
            return (pbegin
                    | "InputPieces" >> beam.Create(self._pieces)
                    | "ReadPieces" >> beam.ParDo(_ReadPieceFn(self._format)))
        return (
            pbegin
            | "InputPatterns" >> beam.Create(self._patterns)
            | "MatchInputFiles" >> fileio.MatchAll(EmptyMatchTreatment.DISALLOW)
            | "OpenInputFiles" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.ParDo(_ReadFileFn(self._format)))
