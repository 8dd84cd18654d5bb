"""Streaming sources: a Pub/Sub subscription, or a watched folder, into the batch path's records.

Both produce :class:`transforms.read.RawRecord` elements, as ``ReadTickets`` does, with an
``origin``: where and when the ticket arrived (``received_at``, POSIX seconds, is what the
first response time is measured from). Validation, batching and the call are then the batch
path's, unchanged.

* :class:`ReadPubsubTickets` — one ticket per message (its data is the JSON object of a JSONL
  line). On Dataflow, Beam's ``ReadFromPubSub`` (the message is acknowledged once the first fused
  stage is committed). On the local runner, :class:`PubsubPoller` in
  :class:`~transforms.stream.poll.PollUntilStopped`: a synchronous pull that acknowledges what
  it pulled (as Beam's direct runner does), so a drain finishes every pulled ticket.
* :class:`WatchTickets` — files matching a pattern (local or ``gs://``, JSONL or Parquet) are
  read once each, when they have stopped growing (same size at two polls in a row), every
  ``interval_secs``; each record's ``received_at`` is its file's modification time.

Example::

    raw = p | "ReadPubsub" >> ReadPubsubTickets("projects/p/subscriptions/s", local=True,
                                                stop_file=stop)
    raw = p | "WatchInput" >> WatchTickets("incoming/*.jsonl", interval_secs=2, stop_file=stop)
"""

from __future__ import annotations

import datetime
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.metrics import TicketflowMetrics
from transforms.read import RawRecord, _ReadFileFn  # pylint: disable=protected-access
from transforms.records import utc_iso
from transforms.stream.poll import PollUntilStopped

#: Messages asked for per pull.
PULL_MAX_MESSAGES = 500
#: How long one pull may wait for messages (seconds) before it returns empty.
PULL_TIMEOUT_SECS = 1.0


def _seconds(when) -> Optional[float]:
    """POSIX seconds of a publish time (datetime, protobuf Timestamp or None)."""
    if when is None:
        return None
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return when.timestamp()
    if hasattr(when, "seconds"):
        return when.seconds + getattr(when, "nanos", 0) / 1e9
    return None


def message_record(subscription: str, data: bytes, attributes: Dict[str, str],
                   message_id: Optional[str], publish_time) -> RawRecord:
    """The :class:`RawRecord` of one Pub/Sub message."""
    received_at = _seconds(publish_time)
    origin = {"received_at": received_at, "message_id": message_id,
              "publish_time": utc_iso(received_at) if received_at else None,
              "attributes": dict(attributes or {})}
    source = f"pubsub:{subscription}"
    try:
        return RawRecord(source, None, data.decode("utf-8"), origin=origin)
    except UnicodeDecodeError as exc:
        return RawRecord(source, None, data.decode("utf-8", errors="replace"),
                         f"not UTF-8 at byte {exc.start}", origin=origin)


class PubsubPoller:
    """Pulls a subscription synchronously and acknowledges what it pulled (local runners).

    Args:
      subscription: ``projects/P/subscriptions/S``.
      max_messages: Messages asked for per pull.
    """

    def __init__(self, subscription: str, max_messages: int = PULL_MAX_MESSAGES):
        self._subscription = subscription
        self._max = max_messages
        self._client = None

    def open(self) -> None:
        from google.cloud import pubsub_v1  # pylint: disable=import-outside-toplevel
        self._client = pubsub_v1.SubscriberClient()

    def poll(self) -> List[RawRecord]:
        from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
        try:
            response = self._client.pull(
                request={"subscription": self._subscription, "max_messages": self._max},
                timeout=PULL_TIMEOUT_SECS)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []
        received = list(response.received_messages)
        if not received:
            return []
        # Acknowledged before they are emitted: if this fails they are delivered again
        # (answered from the response store), never emitted and lost.
        self._client.acknowledge(request={"subscription": self._subscription,
                                          "ack_ids": [m.ack_id for m in received]})
        return [message_record(self._subscription, m.message.data, dict(m.message.attributes),
                               m.message.message_id, m.message.publish_time)
                for m in received]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _MakePubsubPoller:
    """A picklable factory of :class:`PubsubPoller`."""

    def __init__(self, subscription: str):
        self._subscription = subscription

    def __call__(self) -> PubsubPoller:
        return PubsubPoller(self._subscription)


class _CountRead(beam.DoFn):
    def setup(self):
        self._metrics = TicketflowMetrics()

    def process(self, record: RawRecord):
        self._metrics.inc("tickets_read")
        yield record


def _from_message(message, subscription: str) -> RawRecord:
    return message_record(subscription, message.data, message.attributes,
                          getattr(message, "message_id", None),
                          getattr(message, "publish_time", None))


class ReadPubsubTickets(beam.PTransform):
    """One :class:`RawRecord` per message of a subscription.

    Args:
      subscription: ``projects/P/subscriptions/S``.
      local: Poll with the client (local runners) instead of Beam's ``ReadFromPubSub``.
      interval_secs: Local: pause after an empty pull.
      stop_file: Local: the driver's stop flag (see :mod:`transforms.stream.poll`).
    """

    def __init__(self, subscription: str, local: bool, interval_secs: float = 0.2,
                 stop_file: Optional[str] = None):
        super().__init__()
        self._subscription = subscription
        self._local = local
        self._interval = interval_secs
        self._stop_file = stop_file

    def expand(self, pbegin):
        if self._local:
            records = (pbegin
                       | "Start" >> beam.Impulse()
                       | "PullMessages" >> beam.ParDo(PollUntilStopped(
                           _MakePubsubPoller(self._subscription), self._interval,
                           self._stop_file)))
        else:
            subscription = self._subscription
            records = (pbegin
                       | "ReadFromPubSub" >> beam.io.ReadFromPubSub(
                           subscription=subscription, with_attributes=True)
                       | "ToRecords" >> beam.Map(_from_message, subscription))
        return records | "CountRead" >> beam.ParDo(_CountRead())


class FilePoller:
    """Matches a pattern; returns each file once, when its size is the same at two polls.

    Args:
      pattern: A path, glob or ``gs://`` pattern (comma-separated for several).
    """

    def __init__(self, pattern: str):
        self._patterns = [p.strip() for p in pattern.split(",") if p.strip()]
        self._pending: Dict[str, int] = {}
        self._done: set = set()

    def open(self) -> None:
        pass

    def poll(self) -> List[Tuple[str, float, int]]:
        found = []
        for result in FileSystems.match(self._patterns):
            for meta in result.metadata_list:
                if meta.path in self._done:
                    continue
                if self._pending.get(meta.path) == meta.size_in_bytes:
                    self._done.add(meta.path)
                    del self._pending[meta.path]
                    found.append((meta.path, float(meta.last_updated_in_seconds or 0.0),
                                  int(meta.size_in_bytes)))
                else:
                    self._pending[meta.path] = meta.size_in_bytes
        return found

    def close(self) -> None:
        pass


class _MakeFilePoller:
    def __init__(self, pattern: str):
        self._pattern = pattern

    def __call__(self) -> FilePoller:
        return FilePoller(self._pattern)


class _ReadWatchedFileFn(_ReadFileFn):
    """Reads one landed file, as ``ReadTickets`` does; each record's origin is the file."""

    def process(self, readable: fileio.ReadableFile):
        origin = {"received_at": readable.metadata.last_updated_in_seconds,
                  "file": readable.metadata.path}
        for record in super().process(readable):
            yield record._replace(origin=origin)


def _metadata(found: Tuple[str, float, int]) -> FileMetadata:
    path, mtime, size = found
    return FileMetadata(path, size, mtime)


class WatchTickets(beam.PTransform):
    """Reads every file that lands under ``pattern``, once, as :class:`RawRecord` elements.

    Args:
      pattern: A path, glob or ``gs://`` pattern.
      input_format: ``auto`` (by extension), ``jsonl`` or ``parquet``.
      interval_secs: How often the pattern is matched.
      stop_file: The driver's stop flag (local runners; see :mod:`transforms.stream.poll`).
    """

    def __init__(self, pattern: str, input_format: str = "auto", interval_secs: float = 2.0,
                 stop_file: Optional[str] = None):
        super().__init__()
        self._pattern = pattern
        self._format = input_format
        self._interval = interval_secs
        self._stop_file = stop_file

    def expand(self, pbegin):
        return (pbegin
                | "Start" >> beam.Impulse()
                | "MatchNewFiles" >> beam.ParDo(PollUntilStopped(
                    _MakeFilePoller(self._pattern), self._interval, self._stop_file))
                | "ToMetadata" >> beam.Map(_metadata)
                | "SpreadFiles" >> beam.Reshuffle()
                | "OpenFiles" >> fileio.ReadMatches()
                | "ReadRecords" >> beam.ParDo(_ReadWatchedFileFn(self._format)))
