"""Streaming sinks: finished files every window, and Pub/Sub topics.

* :class:`WriteWindowedFiles` — records go to ``PREFIX/BASENAME-<UTC time>-<shard>-<n>.jsonl``,
  one file per shard each time a window of ``window_secs`` closes (``GroupIntoBatches`` with a
  buffering time of one window: it also flushes what is left when the source stops, so a
  drained job leaves nothing unwritten). A file is written under a hidden temporary name and
  renamed, so every file a reader sees is finished: a result is in a finished file within one
  window of its answer.
* :class:`PublishRecords` — one message per record: the record's JSON, the ticket id as the
  ``id`` attribute. On Dataflow, Beam's ``WriteToPubSub``; locally, the client's publisher,
  waiting in ``finish_bundle`` until every message of the bundle is accepted.

Example::

    results | "WriteResultFiles" >> WriteWindowedFiles("out/live", "results-RUN", 60)
    results | "PublishResults" >> PublishRecords("projects/p/topics/answers", local=True)
"""

from __future__ import annotations

import time
import uuid
from typing import Iterable, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.batch import stable_shard
from transforms.sinks import join_path

#: Most records in one window file (a larger window is written as several files).
MAX_RECORDS_PER_FILE = 100_000


class _WriteFileFn(beam.DoFn):
    """Writes one ``(shard, records)`` batch as one finished JSONL file."""

    def __init__(self, prefix: str, basename: str):
        self._prefix = prefix
        self._basename = basename

    def process(self, element: Tuple[str, Iterable]):
        shard, records = element
        lines = [r.to_json() for r in records]
        if not lines:
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{self._basename}-{stamp}-{shard}-{uuid.uuid4().hex[:8]}.jsonl"
        final = join_path(self._prefix, name)
        temporary = join_path(self._prefix, "." + name + ".tmp")
        with FileSystems.create(temporary) as handle:
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))
        FileSystems.rename([temporary], [final])
        yield final


def _shard_key(record, shards: int) -> Tuple[str, object]:
    return f"{stable_shard(record.id or '', shards):03d}", record


class WriteWindowedFiles(beam.PTransform):
    """Writes records (``to_json()``) as finished JSONL files, one per shard and window.

    Args:
      prefix: Output directory (local or ``gs://``).
      basename: File name stem (``results-RUNID``).
      window_secs: Longest a record waits before its file is written.
      shards: Files written in parallel per window.
    """

    def __init__(self, prefix: str, basename: str, window_secs: float, shards: int = 1):
        super().__init__()
        self._prefix = prefix
        self._basename = basename
        self._window = window_secs
        self._shards = shards

    def expand(self, records):
        shards = self._shards
        return (records
                | "KeyByShard" >> beam.Map(_shard_key, shards)
                | "CollectWindow" >> beam.GroupIntoBatches(
                    MAX_RECORDS_PER_FILE, max_buffering_duration_secs=self._window)
                | "WriteFile" >> beam.ParDo(_WriteFileFn(self._prefix, self._basename)))


def _message(record):
    from apache_beam.io.gcp.pubsub import PubsubMessage  # pylint: disable=import-outside-toplevel
    return PubsubMessage(record.to_json().encode("utf-8"), {"id": str(record.id or "")})


class _PublishFn(beam.DoFn):
    """Publishes each record with the client; a bundle ends when all its messages are accepted."""

    def __init__(self, topic: str):
        self._topic = topic

    def setup(self):
        from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
        self._client = pubsub_v1.PublisherClient()

    def start_bundle(self):
        self._futures = []

    def process(self, record):
        self._futures.append(self._client.publish(
            self._topic, record.to_json().encode("utf-8"), id=str(record.id or "")))

    def finish_bundle(self):
        for future in self._futures:
            future.result(timeout=120)
        self._futures = []

    def teardown(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.stop()


class PublishRecords(beam.PTransform):
    """One Pub/Sub message per record on ``topic`` (``projects/P/topics/T``).

    Args:
      topic: The topic.
      local: Publish with the client (local runners) instead of Beam's ``WriteToPubSub``.
    """

    def __init__(self, topic: str, local: bool):
        super().__init__()
        self._topic = topic
        self._local = local

    def expand(self, records):
        if self._local:
            return records | "Publish" >> beam.ParDo(_PublishFn(self._topic))
        return (records
                | "ToMessages" >> beam.Map(_message)
                | "WriteToPubSub" >> beam.io.WriteToPubSub(self._topic, with_attributes=True))
