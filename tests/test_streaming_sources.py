"""What Beam 2.77's local runners do with the streaming sources, pinned for the streaming mode.

* Pub/Sub: only the Python direct runner (``BundleBasedDirectRunner``, ``--streaming``) runs
  ``ReadFromPubSub``: Prism refuses ``beam:transform:pubsub_read:v1``, and the FnApiRunner
  finishes at once without reading. ``pipeline.run()`` returns while the job runs;
  ``result.cancel()`` stops it (``wait_until_finish(duration=...)`` raises NotImplementedError).
  Messages are acked when pulled, elements carry the publish time, and GroupIntoBatches
  flushes a partial batch after ``max_buffering_duration_secs``.
* Watched files: ``fileio.MatchContinuously`` cannot run on the direct runner (its
  splittable DoFn is not expanded); Prism runs it. A Prism job is stopped with
  ``result.cancel()`` and a normal exit, which also stops the Prism process.

The Pub/Sub test runs in this process against the emulator (tests/pubsub_server.py); the Prism
one in a subprocess, as the pipeline would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io import fileio
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import Timestamp

from tests.conftest import stop_process
from tests.pubsub_server import RUNNERS_DIR, unique_name

DIRECT_STREAMING = ["--runner", "BundleBasedDirectRunner", "--streaming"]


class _Describe(beam.DoFn):
    """A message as seen after the read: its id, attributes, publish time and element time."""

    def process(self, message, timestamp=beam.DoFn.TimestampParam):
        yield "one-key", {"id": message.message_id, "attributes": dict(message.attributes),
                          "published_us": Timestamp.from_utc_datetime(message.publish_time).micros,
                          "element_us": timestamp.micros}


def _encode_batch(keyed_batch) -> bytes:
    return json.dumps(list(keyed_batch[1])).encode()


def test_direct_runner_batches_pubsub_messages_onto_a_topic_until_cancelled(pubsub_server):
    server = pubsub_server
    source = server.create_topic(unique_name("in"))
    source_sub = server.create_subscription(source, unique_name("in"))
    sink = server.create_topic(unique_name("out"))
    sink_sub = server.create_subscription(sink, unique_name("out"))

    with server.activated():  # the runner makes its clients on its own thread, from the env
        pipeline = beam.Pipeline(options=PipelineOptions(DIRECT_STREAMING))
        _ = (pipeline
             | "Read" >> beam.io.ReadFromPubSub(subscription=source_sub, with_attributes=True)
             | "Describe" >> beam.ParDo(_Describe())
             | "Batch" >> beam.GroupIntoBatches(batch_size=5, max_buffering_duration_secs=1)
             | "Encode" >> beam.Map(_encode_batch)
             | "Write" >> beam.io.WriteToPubSub(sink))
        result = pipeline.run()
        try:
            assert result.state == "RUNNING"  # returns at once: the job runs on its threads
            sent = {server.publish(source, f"m{i}", n=str(i)): str(i) for i in range(7)}
            batches = server.pull(sink_sub, 2, timeout=30)
        finally:
            result.cancel()
    assert result.state == "CANCELLED"

    # One batch full at 5, then the other 2 flushed by the buffering timer (nothing else came).
    items = [json.loads(batch.data) for batch in batches]
    assert [len(batch) for batch in items] == [5, 2]
    received = [item for batch in items for item in batch]
    assert {item["id"]: item["attributes"]["n"] for item in received} == sent
    for item in received:
        assert item["element_us"] == item["published_us"]  # the publish time is the event time
    partial_written = Timestamp.from_utc_datetime(batches[1].publish_time).micros
    assert partial_written - min(item["published_us"] for item in items[1]) >= 900_000
    # The read acked what it pulled: nothing is left for the subscription.
    assert server.pull(source_sub, 1, timeout=0.6) == []


def test_direct_runner_cannot_run_match_continuously(tmp_path):
    """If Beam fixes this, watched files could run on the direct runner too."""
    pipeline = beam.Pipeline(options=PipelineOptions(DIRECT_STREAMING))
    _ = (pipeline
         | fileio.MatchContinuously(str(tmp_path / "*.jsonl"), interval=1.0,
                                    start_timestamp=Timestamp.now())
         | fileio.ReadMatches())
    with pytest.raises(RuntimeError, match="was not replaced as expected"):
        pipeline.run()


# Runs MatchContinuously on Prism until SIGTERM; each file read becomes one line of OUT.
_WATCH_ON_PRISM = textwrap.dedent("""
    import json, signal, sys
    import apache_beam as beam
    from apache_beam.io import fileio
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.utils.timestamp import Timestamp

    prism, pattern, out = sys.argv[1:]

    def record(readable):
        with open(out, "a") as handle:
            handle.write(json.dumps([readable.metadata.path, readable.read_utf8()]) + "\\n")

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    pipeline = beam.Pipeline(options=PipelineOptions([
        "--runner", "PrismRunner", "--prism_location", prism, "--environment_type", "LOOPBACK",
        "--streaming"]))
    _ = (pipeline
         | fileio.MatchContinuously(pattern, interval=0.5, start_timestamp=Timestamp.now())
         | fileio.ReadMatches()
         | beam.Map(record))
    result = pipeline.run()
    print("running", flush=True)
    try:
        while True:
            result.wait_until_finish(duration=60_000)
    except Stop:
        result.cancel()  # and the normal exit stops the Prism process
        print("cancelled", result.state, flush=True)
""")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _children(pid: int):
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir()
            for child in (task / "children").read_text().split()]


@pytest.mark.runners
def test_prism_watches_files_and_stops_on_sigterm(tmp_path):
    prism = os.environ.get("TF_PRISM_BIN") or str(RUNNERS_DIR / "bin" / "prism")
    if not Path(prism).is_file():
        pytest.skip(f"prism not found at {prism} (set TF_PRISM_BIN or run .ci/install_runners.sh)")
    watched, out = tmp_path / "in", tmp_path / "out.jsonl"
    watched.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WATCH_ON_PRISM, prism, str(watched / "*.jsonl"), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        prism_pids = _children(proc.pid)
        assert prism_pids  # the Prism job server, a child of the pipeline's process
        (watched / "a.tmp").write_text('{"id": "a"}\n')
        (watched / "a.tmp").rename(watched / "a.jsonl")  # appear whole, as a writer should
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(out.read_text()) == [str(watched / "a.jsonl"), '{"id": "a"}\n']

        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().startswith("cancelled CANCELLED")
        # Beam stopped (and reaped) Prism on the way out; a SIGTERM not handled would have
        # orphaned it for about a minute.
        # (It may take the init process a moment to reap it.)
        deadline = time.monotonic() + 10
        while [pid for pid in prism_pids if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in prism_pids if _alive(pid)]
    finally:
        if proc.poll() is None:
            stop_process(proc)

