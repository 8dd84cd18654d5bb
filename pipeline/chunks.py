"""Chunked runs: the same pipeline over consecutive slices of the input, in this process.

Beam's local FnApiRunner holds every element that crosses a grouping in memory (the shuffle by
id that finds duplicates, ``GroupIntoBatches``), so its memory grows with the input: 3–4 KiB per
ticket. On that runner (in-process, not ``multi_processing``) the driver cuts the input into
chunks of ``--local_chunk_tickets`` records (default :data:`DEFAULT_CHUNK_TICKETS`) and runs the
pipeline over each in turn, in ONE process (imports, the engine, its rate limiter and budget are
kept; ~0.6 s of CPU per extra chunk), with one run id, one ledger, one summary; chunk k writes
``results-RUNID-cKKKK-*`` and ``dead_letter-RUNID-cKKKK-*``. See docs/runners.md.

* :func:`chunk_tickets` — where chunks apply; :func:`start` — the run's chunks, or None.
* :func:`plan` — chunks in (file, line) order, the order of the duplicate-id rule
  (``transforms.validate.record_order``): JSONL files are cut at line ends found by a newline
  scan, Parquet files at row numbers; each piece keeps its file's line numbers. The scan is lazy:
  a chunk is found just before it runs, so the first request does not wait for a scan of the
  whole input.
* :class:`KnownIdFiles` — the hashes of the ids kept by the earlier chunks (read back from their
  result and LLM-stage dead-letter shards) and, with ``--resume``, of those earlier runs answered
  (read once, at the start): a chunk's validation drops them as ``duplicate_id`` and
  ``already_done`` exactly as one pass over the whole input would (``transforms/idset.py``).
* :func:`run_chunks` — the loop: one chunk at a time, counters merged; after a graceful stop the
  chunks not started are not read, and their records are counted ``not_read``.

Example::

    size, why_not = chunk_tickets(requested, runner, mode, config)
    chunks = start(size, config)              # None: one pass over the whole input
    with KnownIdFiles() as ids:
        outcome = run_chunks(chunks, run_one, ids, config.output, basenames,
                             stopped=lambda: stopper.interrupted)
    outcome.counts, outcome.chunks, outcome.not_read
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import shutil
import tempfile
import time
from typing import Callable, Iterator, List, Optional, Self, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.config import ConfigError, JobConfig
from transforms import idset
from transforms.logs import event
from transforms.metrics import DISTRIBUTIONS
from transforms.read import FORMAT_PARQUET, Piece, format_of
from transforms.records import STAGE_PARSE
from transforms.shards import is_parquet, shard_rows
from transforms.sinks import RESULTS_BASENAME, join_path

_LOG = logging.getLogger("ticketflow")

#: Records per chunk when ``--local_chunk_tickets`` is not given: ~0.5 GB of peak memory on the
#: FnApiRunner, and a first request within seconds (docs/runners.md).
DEFAULT_CHUNK_TICKETS = 50_000
#: The first chunk is smaller, so that the first request comes after reading and grouping a
#: few thousand records, not a whole chunk (3.6 s of CPU from the start instead of 6 s).
FIRST_CHUNK_TICKETS = 5_000
LOCAL_RUNNERS = ("FnApiRunner",)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One slice of the input, run as one pipeline.

    Attributes:
      index: 1-based; its shards are ``results-RUNID-cKKKK-*``.
      pieces: The slices of files it reads, in (file, line) order.
      records: How many records (non-blank lines, rows) the pieces hold.
      known: The ids its validation must not pass on (set by :func:`run_chunks`).
    """
    index: int
    pieces: Tuple[Piece, ...]
    records: int
    known: Optional[idset.KnownIds] = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What :func:`run_chunks` did: the merged counters, chunks run, records left unread."""
    counts: dict
    chunks: int
    not_read: int


def chunk_tickets(requested: Optional[int], runner: str, running_mode: Optional[str],
                  config: JobConfig, dry_run: bool = False) -> Tuple[int, Optional[str]]:
    """How many records per chunk, or 0 and why the run is not chunked.

    Args:
      requested: ``--local_chunk_tickets`` (None: the default; 0: off).
      runner: The runner's name once ``DirectRunner`` became ``FnApiRunner``.
      running_mode: ``--direct_running_mode``.

    Raises:
      ConfigError: a negative size.
    """
    if requested is not None and requested < 0:
        raise ConfigError(f"--local_chunk_tickets must be >= 0 (0: no chunks), got {requested}.")
    if requested == 0:
        return 0, "--local_chunk_tickets 0"
    if runner not in LOCAL_RUNNERS:
        return 0, f"{runner} is not the local in-process runner (its shuffles spill to disk)"
    if (running_mode or "") == "multi_processing":
        return 0, "multi_processing workers hold only their share of each grouping"
    why_not = {"--api batch": config.batch_api.batch, "--sample": config.sample,
               "--replay": config.replay, "--dry_run": dry_run}
    for flag, on in why_not.items():
        if on:
            return 0, f"{flag} needs the whole input in one pass (docs/runners.md)"
    return requested or DEFAULT_CHUNK_TICKETS, None


def matched_paths(pattern: str) -> List[str]:
    """The files ``ReadTickets(pattern)`` reads, in the duplicate rule's order (by name)."""
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    return sorted(m.path for result in FileSystems.match(patterns) for m in result.metadata_list)


def chunkable(paths: Sequence[str], input_format: str) -> Optional[str]:
    """None when every file can be cut into pieces; else why not (compressed JSONL)."""
    for path in paths:
        if (format_of(path, input_format) != FORMAT_PARQUET
                and CompressionTypes.detect_compression_type(path)
                != CompressionTypes.UNCOMPRESSED):
            return f"{path} is compressed (it cannot be read from an offset)"
    return None


class _JsonlCutter:
    """Cuts one JSONL file into pieces of at most n records, at line ends."""

    def __init__(self, path: str):
        self._path = path
        self._handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._offset = 0
        self._line = 1

    def take(self, wanted: int) -> Optional[Tuple[Piece, int]]:
        start, first_line, found = self._offset, self._line, 0
        for line in self._handle:
            self._offset += len(line)
            self._line += 1
            if line.strip():
                found += 1
                if found == wanted:
                    break
        if not found:
            self._handle.close()
            return None
        return Piece(self._path, start, self._offset, first_line), found


class _ParquetCutter:
    """Cuts one Parquet file into pieces of at most n rows."""

    def __init__(self, path: str):
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

        self._path = path
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            self._rows = pq.ParquetFile(handle).metadata.num_rows
        self._row = 0

    def take(self, wanted: int) -> Optional[Tuple[Piece, int]]:
        if self._row >= self._rows:
            return None
        end = min(self._rows, self._row + wanted)
        piece = Piece(self._path, self._row, end, self._row + 1)
        found, self._row = end - self._row, end
        return piece, found


def plan(paths: Sequence[str], input_format: str, chunk_size: int,
         first_size: Optional[int] = None) -> Iterator[Chunk]:
    """Chunks of ``chunk_size`` records (the last may hold fewer), found as they are needed.

    Args:
      paths: The input files in the duplicate rule's order (:func:`matched_paths`).
      input_format: ``auto``, ``jsonl`` or ``parquet`` (as ``--input_format``).
      chunk_size: Records per chunk (> 0).
      first_size: Records of the first chunk (default: ``chunk_size``).
    """
    if chunk_size <= 0 or (first_size is not None and first_size <= 0):
        raise ValueError(f"chunk sizes must be > 0, not {chunk_size} and {first_size}")
    size = first_size or chunk_size
    index, pieces, count = 1, [], 0
    for path in paths:
        cutter = (_ParquetCutter(path) if format_of(path, input_format) == FORMAT_PARQUET
                  else _JsonlCutter(path))
        while True:
            taken = cutter.take(size - count)
            if taken is None:
                break
            pieces.append(taken[0])
            count += taken[1]
            if count == size:
                yield Chunk(index, tuple(pieces), count)
                index, pieces, count, size = index + 1, [], 0, chunk_size
    if count:
        yield Chunk(index, tuple(pieces), count)


def start(chunk_size: int, config: JobConfig, explicit: bool = False
          ) -> Optional[Iterator[Chunk]]:
    """The run's chunks, or None to read the whole input in one pass.

    None when ``chunk_size`` is 0, when a file cannot be cut (compressed JSONL), or when the
    input fits in one chunk (one pass is then the same run, without chunk names in its files).
    Otherwise the first chunk holds at most :data:`FIRST_CHUNK_TICKETS` records. Only the first
    ``chunk_size`` + 1 records are scanned here; the rest as they are needed.

    Args:
      explicit: ``--local_chunk_tickets`` was given, so say why it is not applied.
    """
    if not chunk_size:
        return None
    try:
        paths = matched_paths(config.input)
        why_not = chunkable(paths, config.input_format)
        if why_not is None:
            probe = plan(paths, config.input_format, chunk_size)
            next(probe, None)
            more = next(probe, None) is not None
    except Exception as exc:  # noqa: BLE001 - one pass then reports the real read error
        why_not = f"cannot scan the input ({type(exc).__name__}: {str(exc)[:200]})"
    if why_not is not None:
        event(_LOG, logging.WARNING, "chunks_off", reason=why_not,
              note="the whole input is held in memory by the local runner")
        return None
    if not more:
        if explicit:
            event(_LOG, logging.INFO, "chunks_off", reason="the input fits in one chunk")
        return None
    return plan(paths, config.input_format, chunk_size,
                first_size=min(chunk_size, FIRST_CHUNK_TICKETS))


_DECODER = json.JSONDecoder()


def _leading_fields(line: bytes, names: Sequence[str]) -> tuple:
    """The first fields of a shard line we wrote (``{"id": ..., "stage": ...``), decoding only
    them; any other line is parsed whole."""
    text = line.decode("utf-8")
    values, at = [], 1
    try:
        for name in names:
            key = f'"{name}": '
            at = at + 2 if values else at  # ", " between two fields
            if not text.startswith(key, at):
                raise ValueError(name)
            value, at = _DECODER.raw_decode(text, at + len(key))
            values.append(value)
        return tuple(values)
    except ValueError:
        record = json.loads(text) if text.strip() else {}
        if not isinstance(record, dict):
            return tuple(None for _ in names)
        return tuple(record.get(name) for name in names)


def _shard_fields(path: str, names: Sequence[str]) -> Iterator[tuple]:
    if is_parquet(path):
        yield from shard_rows(path, names)
        return
    with FileSystems.open(path) as handle:
        for line in handle:
            if line.strip():
                yield _leading_fields(line, names)


def _files(pattern: str) -> List[str]:
    return [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]


class KnownIdFiles:
    """The id-hash files a chunk's validation reads (a context manager: a temporary directory).

    Args:
      workdir: Where to keep them (default: a new temporary directory, removed on exit). The
        workers read them by path, so it must be local to them: the in-process runner's are.
    """

    def __init__(self, workdir: Optional[str] = None):
        self._own = workdir is None
        self._dir = workdir or tempfile.mkdtemp(prefix="ticketflow-ids-")
        self._version = 0
        self.known = idset.KnownIds()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self._own:
            shutil.rmtree(self._dir, ignore_errors=True)

    def read_done(self, output: str) -> int:
        """``--resume``: the ids of every ``results-*`` under ``output``, read once; returns how
        many distinct ids."""
        ids = (value for path in _files(join_path(output, RESULTS_BASENAME) + "-*")
               for (value,) in _shard_fields(path, ("id",)) if value is not None)
        hashes = idset.hash_ids(str(value) for value in ids)
        path = f"{self._dir}/done.npy"
        idset.save_hashes(path, hashes)
        self.known = dataclasses.replace(self.known, done=path)
        return len(hashes)

    def add_kept(self, output: str, results_basename: str, dead_letter_basename: str) -> int:
        """Adds the ids a finished chunk kept: its results and its LLM-stage dead letters (every
        ticket that passed validation ends as one or the other); returns how many."""
        kept = [str(value) for path in _files(join_path(output, results_basename) + "-*")
                for (value,) in _shard_fields(path, ("id",)) if value is not None]
        kept += [str(value) for path in _files(join_path(output, dead_letter_basename) + "-*")
                 for value, stage in _shard_fields(path, ("id", "stage"))
                 if stage != STAGE_PARSE and value is not None]
        # Only the files hold the ids between two chunks (80 MB at 10M ids), not this process.
        earlier = idset.union(idset.IdHashSet.load(self.known.earlier).hashes,
                              idset.hash_ids(kept))
        self._version += 1
        # A new file each time: a mapping of the previous one may still be alive.
        path = f"{self._dir}/earlier-{self._version:05d}.npy"
        idset.save_hashes(path, earlier)
        self.known = dataclasses.replace(self.known, earlier=path)
        return len(kept)


def merge_counts(total: dict, counts: dict) -> dict:
    """Two chunks' counters (``transforms.metrics.summarize``) as one run's: sums, except the
    distributions' means (weighted by their counts) and maxima."""
    out = dict(total)
    derived = {f"{d}_{part}" for d in DISTRIBUTIONS for part in ("mean", "max", "count")}
    for name, value in counts.items():
        if name not in derived:
            out[name] = out.get(name, 0) + value
    for dist in DISTRIBUTIONS:
        mean, top, count = f"{dist}_mean", f"{dist}_max", f"{dist}_count"
        if not counts.get(count):
            continue
        before = out.get(count, 0)
        after = before + counts[count]
        out[mean] = round((out.get(mean, 0) * before + counts[mean] * counts[count]) / after, 3)
        out[top] = max(out.get(top, counts[top]), counts[top])
        out[count] = after
    return out


def run_chunks(chunks: Iterator[Chunk], run_one: Callable[[Chunk], dict], ids: KnownIdFiles,
               output: str, basenames: Callable[[int], Tuple[str, str]],
               stopped: Callable[[], bool], clock: Callable[[], float] = time.monotonic
               ) -> Outcome:
    """Runs the chunks one after the other.

    Args:
      chunks: From :func:`plan`.
      run_one: Runs one chunk's pipeline to its end; returns its counters.
      ids: The id-hash files; each finished chunk's kept ids are added for the next.
      output: The output prefix.
      basenames: Chunk index → its (results, dead-letter) basenames.
      stopped: Whether a graceful stop was requested: the chunk running finishes (its unsent
        tickets are dead letters ``interrupted``); the others are not read.
    """
    total: dict = {}
    ran = 0
    for chunk in chunks:
        if stopped():
            not_read = chunk.records + sum(c.records for c in chunks)
            event(_LOG, logging.WARNING, "chunks_not_read", chunks_run=ran, not_read=not_read,
                  note="run the same command with --resume to answer them")
            return Outcome(total, ran, not_read)
        started = clock()
        first = chunk.pieces[0]
        event(_LOG, logging.INFO, "chunk", chunk=chunk.index, records=chunk.records,
              first=f"{first.path}:{first.first_line}")
        try:
            counts = run_one(dataclasses.replace(chunk, known=ids.known))
        except Exception:
            event(_LOG, logging.ERROR, "chunk_failed", chunk=chunk.index, chunks_written=ran,
                  note="the chunks before it are written: run the same command with --resume "
                  "to continue")
            raise
        total = merge_counts(total, counts)
        ran += 1
        if not stopped():
            kept = ids.add_kept(output, *basenames(chunk.index))
            event(_LOG, logging.DEBUG, "chunk_done", chunk=chunk.index, kept=kept,
                  secs=round(clock() - started, 1))
        # The finished pipeline's elements are garbage now; free them before the next one.
        gc.collect()
    return Outcome(total, ran, 0)
