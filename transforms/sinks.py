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

import json
from typing import Optional

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


def _parquet_row(result, schema: Optional[dict] = None, endpoints: bool = False) -> dict:
    row = result.to_dict()
    row["ticket"] = json.dumps(row["ticket"], ensure_ascii=False)
    output = row.pop("output", None)
    if schema is not None:
        names = RESULT_SCHEMA.names + (["endpoint"] if endpoints else [])
        row.update(structured_lib.parquet_values(schema, output, names))
    return row


def results_schema(structured: Optional[structured_lib.StructuredOutput] = None,
                   endpoints: bool = False) -> pa.Schema:
    """The Parquet schema of results: RESULT_SCHEMA, plus the typed columns of the answer's
    fields, plus ``endpoint`` with ``--endpoints``."""
    base = list(RESULT_SCHEMA) + ([pa.field("endpoint", pa.string())] if endpoints else [])
    if structured is None:
        return pa.schema(base)
    extra = structured_lib.parquet_fields(structured.schema, [f.name for f in base])
    return pa.schema(base + extra)


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
      endpoints: With ``--endpoints``: results carry an ``endpoint`` column in Parquet too.
    """

    def __init__(self, prefix: str, output_format: str = "jsonl", basename: str = RESULTS_BASENAME,
                 structured: Optional[structured_lib.StructuredOutput] = None,
                 endpoints: bool = False):
        super().__init__()
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}")
        self._path = join_path(prefix, basename)
        self._format = output_format
        self._structured = structured
        self._endpoints = endpoints

    def expand(self, results):
        if self._format == "parquet":
            schema = self._structured.schema if self._structured is not None else None
            return (results
                    | "ResultToRow" >> beam.Map(_parquet_row, schema, self._endpoints)
                    | "WriteParquet" >> beam.io.WriteToParquet(
                        self._path, results_schema(self._structured, self._endpoints),
                        file_name_suffix=".parquet",
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
