"""Streaming jobs: the watched folder end to end on Prism, the drain, flags, the pollers.

The Pub/Sub source and sinks are tested against the real local emulator in
``tests/test_streaming_pubsub.py``.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.stream.run import DEFAULT_PRISM
from tests.conftest import REPO, write_jsonl
from transforms.stream.poll import stop_requested
from transforms.stream.sources import FilePoller, message_record

PRISM = os.environ.get("TF_PRISM_BIN") or DEFAULT_PRISM
needs_prism = pytest.mark.skipif(not os.path.exists(PRISM),
                                 reason=f"no prism binary at {PRISM} (.ci/install_runners.sh)")


def tickets(prefix: str, n: int) -> list:
    return [{"id": f"{prefix}-{i}", "subject": "Refund", "body": f"Order {i} arrived broken."}
            for i in range(n)]


def start_job(args, output: Path, env=None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--output", str(output), *args],
                            cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_ids(output: Path, basename: str = "results") -> list:
    ids = []
    for path in glob.glob(str(output / f"{basename}-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            ids.extend(json.loads(line)["id"] for line in handle if line.strip())
    return ids


def wait_for(predicate, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def drain_when(proc: subprocess.Popen, output: Path, count: int, what: str,
               timeout: float = 90) -> tuple:
    """Waits for ``count`` results under ``output``, sends SIGINT, returns (stdout, stderr)."""
    try:
        wait_for(lambda: len(result_ids(output)) == count, timeout, what, proc)
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.e2e
@needs_prism
def test_watched_folder_answers_each_file_once_then_drains_on_sigint(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_jsonl(incoming / "a.jsonl", tickets("A", 20) + ["{not json"])
    out = tmp_path / "out"
    flags = ["--watch", "--input", str(incoming / "*.jsonl"), "--simulate",
             "--watch_interval_secs", "0.5", "--window_secs", "1", "--progress_interval_secs",
             "1", "--response_store", str(tmp_path / "store")]
    proc = start_job(flags, out)
    try:
        # The first file is answered and in a finished file within a window or so.
        wait_for(lambda: len(result_ids(out)) == 20, 90, "the first file's answers", proc)
    except BaseException:
        proc.kill()
        raise
    # A second file lands (written under another name, then renamed into the pattern).
    write_jsonl(incoming / ".b.tmp", tickets("B", 15))
    os.rename(incoming / ".b.tmp", incoming / "b.jsonl")
    stdout, stderr = drain_when(proc, out, 35, "the second file's answers", timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == 36 and summary["succeeded"] == 35
    assert summary["dead_lettered"] == 1 and summary["dead_letter_reasons"] == {"invalid_json": 1}
    assert summary["ledger_balanced"] is True and summary["interrupted"] == "SIGINT"
    ids = result_ids(out)
    assert sorted(ids) == sorted(t["id"] for t in tickets("A", 20) + tickets("B", 15))
    first = summary["streaming"]
    assert first["source"] == "watch" and first["first_response_ms_p50"] > 0
    assert "first response" in stdout
    report = (out / "report.html").read_text()
    assert 'data-plot="first_response"' in report and 'data-plot="backlog"' in report
    with open(glob.glob(str(out / "results-*.jsonl"))[0], encoding="utf-8") as handle:
        origin = json.loads(handle.readline())["origin"]
    assert origin["file"].endswith(".jsonl") and origin["received_at"] > 0
    # Every file under --output is finished (no hidden temporary file is left).
    assert not glob.glob(str(out / ".*.tmp"))
    progress = [line for line in stderr.splitlines() if " progress " in line]
    assert progress and all(key in progress[-1] for key in (
        "received=", "answered=", "in_flight=", "backlog=", "first_response_p99_ms=",
        "tickets_per_min=", "cost_usd="))

    # A restarted watch sees both files again: answered from the response store, paid once.
    again = tmp_path / "again"
    proc = start_job(flags, again)
    _, stderr = drain_when(proc, again, 35, "the answers again")
    assert proc.returncode == 130, stderr[-3000:]
    repeat = json.loads((again / "summary.json").read_text())
    assert repeat["cache_hits"] == 35 and repeat["cost_usd"] == 0
    assert repeat["simulator"]["requests"] == 0 and repeat["ledger_balanced"] is True


@pytest.mark.e2e
@needs_prism
def test_a_drain_longer_than_drain_secs_is_cut_short_and_the_ledger_says_so(
        tmp_path, simulator_factory):
    """Answers take 30 s; SIGINT with --drain_secs 2: the pipeline is cancelled, exit 130 within
    seconds, and the summary's ledger is not balanced (the tickets in flight were not written)."""
    slow = simulator_factory(latency_median_ms=30_000)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_jsonl(incoming / "a.jsonl", tickets("S", 4))
    out = tmp_path / "out"
    proc = start_job(["--watch", "--input", str(incoming / "*.jsonl"), "--base_url",
                      slow.base_url, "--watch_interval_secs", "0.5", "--window_secs", "1",
                      "--drain_secs", "2", "--progress_interval_secs", "1"], out)
    try:
        wait_for(lambda: slow.stats()["in_flight"] >= 1, 90, "a request in flight", proc)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert time.monotonic() - started < 25, "the drain was not cut short"
    assert "drain_timeout" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT" and summary["ledger_balanced"] is False
    assert not result_ids(out)


@pytest.mark.parametrize("args, message", [
    (["--input_subscription", "tickets"], "projects/P/subscriptions/S"),
    (["--input_subscription", "projects/p/subscriptions/s", "--watch", "--input", "x"],
     "two sources"),
    (["--watch"], "--watch needs --input"),
    (["--watch", "--input", "x/*.jsonl", "--output_topic", "answers"], "projects/P/topics/T"),
    (["--input", "x.jsonl", "--output_topic", "projects/p/topics/t"], "streaming jobs"),
    (["--watch", "--input", "x/*.jsonl", "--resume"], "bounded inputs"),
    (["--watch", "--input", "x/*.jsonl", "--api", "batch"], "bounded inputs"),
    (["--watch", "--input", "x/*.jsonl", "--window_secs", "0"], "--window_secs"),
])
def test_streaming_flag_mistakes_are_one_line_and_exit_2(run_pipeline, args, message):
    run = run_pipeline(*args, "--simulate")
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr


def test_file_poller_returns_a_file_once_when_it_stopped_growing(tmp_path):
    poller = FilePoller(str(tmp_path / "*.jsonl"))
    poller.open()
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1}\n')
    assert poller.poll() == []                 # first seen: maybe still being written
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": 2}\n')
    assert poller.poll() == []                 # it grew
    found = poller.poll()                      # same size twice: landed
    assert [f[0] for f in found] == [str(path)] and found[0][2] == path.stat().st_size
    assert poller.poll() == []                 # once only
    (tmp_path / "b.jsonl").write_text('{"id": 3}\n')
    poller.poll()
    assert [os.path.basename(f[0]) for f in poller.poll()] == ["b.jsonl"]


def test_stop_requested_is_the_stop_file(tmp_path):
    stop = tmp_path / "stop"
    assert not stop_requested(str(stop)) and not stop_requested(None)
    stop.write_text("")
    assert stop_requested(str(stop))


def test_a_message_becomes_a_raw_record_with_its_origin():
    import datetime
    when = datetime.datetime(2026, 12, 6, 1, 2, 3, tzinfo=datetime.timezone.utc)
    record = message_record("projects/p/subscriptions/s", b'{"id": "T-1", "body": "x"}',
                            {"team": "billing"}, "42", when)
    assert record.value == '{"id": "T-1", "body": "x"}' and record.decode_error is None
    assert record.source == "pubsub:projects/p/subscriptions/s"
    assert record.origin == {"received_at": when.timestamp(), "message_id": "42",
                             "publish_time": "2026-12-06T01:02:03.000Z",
                             "attributes": {"team": "billing"}}
    bad = message_record("projects/p/subscriptions/s", b"\xff{}", {}, "43", when)
    assert bad.decode_error and bad.origin["message_id"] == "43"


DRY_RUN = ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth",
           "--sdk_location=container", "--project", "tf-dry-project", "--region", "us-central1",
           "--temp_location", "gs://tf-dry-bucket/tmp", "--output", "gs://tf-dry-bucket/live",
           "--base_url", "http://127.0.0.1:1/v1", "--enable_streaming_engine"]


@pytest.mark.parametrize("source, steps", [
    (["--input_subscription", "projects/tf-dry-project/subscriptions/tickets"],
     ("ReadPubsub/ReadFromPubSub", "ReadPubsub/ToRecords")),
    (["--watch", "--input", "gs://tf-dry-bucket/incoming/*.jsonl"],
     ("WatchInput/MatchNewFiles", "WatchInput/ReadRecords")),
])
def test_streaming_job_translates_to_a_dataflow_job_offline(source, steps):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import config as config_lib
    from pipeline import run as run_lib
    from pipeline.stream import run as stream_run

    options = PipelineOptions(DRY_RUN + source + [
        "--output_topic", "projects/tf-dry-project/topics/answers",
        "--dead_letter_topic", "projects/tf-dry-project/topics/dead"])
    config = config_lib.from_options(options)
    assert config.stream is not None and not config.stream.local
    assert config.batch.max_buffering_secs == 1.0
    options, config = stream_run.prepare(options, config)
    assert config.stream.stop_file is None  # Dataflow drains; no stop file
    pipeline = beam.Pipeline(options=options)
    run_lib.build(pipeline, config)
    job = pipeline.run().job
    assert job.proto.type_.name == "JOB_TYPE_STREAMING"
    labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in (*steps, "ValidateTickets", "BatchTickets", "CallModel", "FirstResponse",
                 "WriteResults/CollectWindow", "WriteDeadLetters/WriteFile",
                 "PublishResults/WriteToPubSub", "PublishDeadLetters/WriteToPubSub"):
        assert step in labels, f"{step} missing from the Dataflow job"


def test_a_job_on_prism_outlives_the_portable_runners_five_minute_deadline():
    """Beam reads a portable job's state stream with --job_server_timeout (300 s) as its gRPC
    deadline: a streaming job on Prism failed after 5 minutes ("Deadline Exceeded")."""
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    from pipeline.run import local_runner_options
    options = local_runner_options(PipelineOptions(["--runner", "PrismRunner"]))
    assert options.view_as(PortableOptions).job_server_timeout >= 365 * 24 * 3600
    chosen = local_runner_options(PipelineOptions(["--runner", "PrismRunner",
                                                   "--job_server_timeout", "60"]))
    assert chosen.view_as(PortableOptions).job_server_timeout == 60


def test_a_job_server_named_by_the_user_keeps_the_flags_deadline():
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    from pipeline.run import local_runner_options
    options = local_runner_options(PipelineOptions(["--runner", "PrismRunner",
                                                    "--job_endpoint", "localhost:1"]))
    assert options.view_as(PortableOptions).job_server_timeout == 300
