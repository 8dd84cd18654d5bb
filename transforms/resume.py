"""Resume: the ids already answered by earlier runs under the same output prefix.

``ReadDoneIds`` reads the id of every record in ``PREFIX/results-*`` (JSONL or Parquet); the
validation step drops tickets whose id is among them (counted as ``already_done``), so a resumed
run asks only for what is missing and the union of all result shards holds each id once.

Example::

    done = p | "ReadDoneIds" >> ReadDoneIds("out/run1")
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.fileio import EmptyMatchTreatment

from transforms.shards import shard_values
from transforms.sinks import RESULTS_BASENAME, join_path


class _ResultIdsFn(beam.DoFn):
    def process(self, metadata):
        for value in shard_values(metadata.path, "id"):
            if value is not None:
                yield str(value)


class ReadDoneIds(beam.PTransform):
    """Ids present in earlier result shards under ``prefix`` (none if there are none)."""

    def __init__(self, prefix: str):
        super().__init__()
        self._pattern = join_path(prefix, RESULTS_BASENAME) + "-*"

    def expand(self, pbegin):
        return (pbegin
                | "ResultPattern" >> beam.Create([self._pattern])
                | "MatchResults" >> fileio.MatchAll(EmptyMatchTreatment.ALLOW)
                | "ReadIds" >> beam.ParDo(_ResultIdsFn()))
