"""Writers for results and dead letters.

Results go to ``PREFIX/results-SSSSS-of-NNNNN.jsonl`` (or ``.parquet`` with ``--output_format
parquet``); dead letters always to ``PREFIX/dead_letter-SSSSS-of-NNNNN.jsonl``. Paths may be local or
``gs://`` (Beam's FileSystems).

In Parquet, the input record under ``ticket`` is stored as a JSON string column, because input
fields vary from one file to the next and a Parquet schema may not. With ``--response_schema``, the
answer's fields are typed top-level columns (see :mod:`transforms.structured`); in JSONL they are
the nested object ``output``.

Example::

    results | "WriteResults" >> WriteResults("out/run1", "parquet")
"""

from __future__ import annotations

import datetime
import json
from typing import List, Optional, Tuple

import apache_beam as beam
import pyarrow as pa

from transforms import structured as structured_lib

OUTPUT_FORMATS = ("jsonl", "parquet")

RESULTS_BASENAME = "results"
DEAD_LETTER_BASENAME = "dead_letter"
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"

RESULT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("response", pa.string()),
    ("model", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("attempts", pa.int64()),
    ("started_at", pa.string()),
    ("finished_at", pa.string()),
    ("request_id", pa.string()),
    ("cost_usd", pa.float64()),
    ("cached", pa.bool_()),
    ("ticket", pa.string()),
])


def _parquet_row(result, schema: Optional[dict] = None) -> dict:
    row = result.to_dict()
    row["ticket"] = json.dumps(row["ticket"], ensure_ascii=False)
    output = row.pop("output", None)
    if schema is not None:
        row.update(structured_lib.parquet_values(schema, output, RESULT_SCHEMA.names))
    return row


def results_schema(structured: Optional[structured_lib.StructuredOutput] = None) -> pa.Schema:
    """The Parquet schema of results: RESULT_SCHEMA, plus the typed columns of the answer's fields."""
    if structured is None:
        return RESULT_SCHEMA
    extra = structured_lib.parquet_fields(structured.schema, RESULT_SCHEMA.names)
    return pa.schema(list(RESULT_SCHEMA) + extra)


def join_path(prefix: str, name: str) -> str:
    """``prefix/name`` for local and ``gs://`` prefixes alike."""
    return prefix.rstrip("/") + "/" + name


class WriteResults(beam.PTransform):
    """Writes Result records as JSONL or Parquet shards under ``prefix``.

    Args:
      prefix: Output directory (local or gs://).
      output_format: ``jsonl`` or ``parquet``.
      basename: File name stem (``results``; runs that must not overwrite pass another).
      structured: The ``--response_schema``, whose fields become typed Parquet columns.
    """

    def __init__(self, prefix: str, output_format: str = "jsonl", basename: str = RESULTS_BASENAME,
                 structured: Optional[structured_lib.StructuredOutput] = None):
        super().__init__()
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}")
        self._path = join_path(prefix, basename)
        self._format = output_format
        self._structured = structured

    def expand(self, results):
        if self._format == "parquet":
            schema = self._structured.schema if self._structured is not None else None
            return (results
                    | "ResultToRow" >> beam.Map(_parquet_row, schema)
                    | "WriteParquet" >> beam.io.WriteToParquet(
                        self._path, results_schema(self._structured), file_name_suffix=".parquet",
                        shard_name_template=SHARD_TEMPLATE))
        return (results
                | "ResultToJson" >> beam.Map(lambda r: r.to_json())
                | "WriteJsonl" >> beam.io.WriteToText(
                    self._path, file_name_suffix=".jsonl", shard_name_template=SHARD_TEMPLATE))


class WriteDeadLetters(beam.PTransform):
    """Writes DeadLetter records as JSONL shards under ``prefix``."""

    def __init__(self, prefix: str, basename: str = DEAD_LETTER_BASENAME):
        super().__init__()
        self._path = join_path(prefix, basename)

    def expand(self, dead_letters):
        return (dead_letters
                | "DeadLetterToJson" >> beam.Map(lambda d: d.to_json())
                | "WriteJsonl" >> beam.io.WriteToText(
                    self._path, file_name_suffix=".jsonl", shard_name_template=SHARD_TEMPLATE))


def count_records(prefix: str, basename: str) -> int:
    """Counts the records written under ``prefix/basename-*`` (JSONL lines or Parquet rows).

    The driver uses it to check the ledger against what is really on disk, not only the counters.
    """
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    pattern = join_path(prefix, basename) + "-*"
    total = 0
    for match in FileSystems.match([pattern])[0].metadata_list:
        path = match.path
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
            with FileSystems.open(path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        else:
            with FileSystems.open(path) as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    total += chunk.count(b"\n")
    return total


def existing_outputs(prefix: str) -> list:
    """Result, dead-letter and summary files already under ``prefix``."""
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    patterns = [join_path(prefix, RESULTS_BASENAME) + "-*", join_path(prefix, DEAD_LETTER_BASENAME)
                + "-*", join_path(prefix, "summary.json")]
    found = []
    for result in FileSystems.match(patterns):
        found.extend(m.path for m in result.metadata_list)
    return found


def _parse_utc(text) -> Optional[float]:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def completion_times(prefix: str) -> Tuple[List[float], List[float]]:
    """When each written ticket finished: results' ``finished_at`` and dead letters'
    ``last_attempt_at`` (parse-stage dead letters have none), as POSIX seconds.

    The driver uses it for the report's throughput plot when the live counters saw nothing
    (runners whose workers run in other processes).
    """
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel

    def jsonl_values(path, field):
        with FileSystems.open(path) as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line).get(field)

    ok: List[float] = []
    dead: List[float] = []
    for match in FileSystems.match([join_path(prefix, RESULTS_BASENAME) + "-*"])[0].metadata_list:
        if match.path.endswith(".parquet"):
            import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
            with FileSystems.open(match.path) as handle:
                values = pq.read_table(handle, columns=["finished_at"]).column(0).to_pylist()
        else:
            values = jsonl_values(match.path, "finished_at")
        ok.extend(t for t in map(_parse_utc, values) if t is not None)
    for match in FileSystems.match(
            [join_path(prefix, DEAD_LETTER_BASENAME) + "-*"])[0].metadata_list:
        dead.extend(t for t in map(_parse_utc, jsonl_values(match.path, "last_attempt_at"))
                    if t is not None)
    return ok, dead
