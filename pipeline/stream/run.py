"""The streaming job: runner set-up, wiring, live progress and the drain (docs/streaming.md).

``pipeline/run.py`` runs a streaming job through the same steps as a batch one; this module
holds what differs:

* :func:`prepare` — streaming mode; a local job runs on Prism (it runs the splittable DoFns the
  local sources are made of; Beam 2.77's Python direct runner does not), found at
  ``--prism_location``, ``$TF_PRISM_BIN`` or where ``.ci/install_runners.sh`` puts it, started
  here in a session of its own; and the driver's stop file.
* :func:`build` — source → the batch path's validation, batching and ``CallModel`` → first
  response time → windowed files (always: the ledger counts them) and topics (when asked).
* :class:`StreamProgress` — one ``progress`` line every interval: received, answered, dead
  lettered, in flight, backlog, tickets/min, first response p50/p99, 429s, cost so far.
* :func:`watchers` — SIGINT/SIGTERM creates the stop file: the sources stop taking tickets, what
  was received is finished and written, and the pipeline ends by itself (exit 130).

Example::

    options, config = prepare(options, config)
    build(pipeline, config, results_basename, dead_letter_basename)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions,
                                                  PortableOptions, PrismRunnerOptions,
                                                  StandardOptions)

from pipeline import config as config_lib
from pipeline import watch
from pipeline.options import no_job_deadline
from pipeline.preflight import UsageError
from transforms import metrics as metrics_lib
from transforms import stream as stream_lib
from transforms.batch import BatchTickets
from transforms.llm import CallModel
from transforms.llm.stop import StopSignal
from transforms.logs import event
from transforms.stream.sinks import PublishRecords, WriteWindowedFiles
from transforms.stream.sources import ReadPubsubTickets, WatchTickets
from transforms.validate import ValidateTickets

_LOG = logging.getLogger("ticketflow")

#: Where .ci/install_runners.sh builds Prism.
DEFAULT_PRISM = "/opt/ticketflow-runners/bin/prism"
LOCAL_RUNNERS = ("", "DirectRunner", "direct", "Direct", "FnApiRunner", "PrismRunner", "prism",
                 "BundleBasedDirectRunner", "SwitchingDirectRunner")


def prism_binary(options: PipelineOptions) -> str:
    """The Prism binary a local streaming job runs on.

    Raises:
      UsageError: when there is none (Beam would try to download one).
    """
    given = options.view_as(PrismRunnerOptions).prism_location
    for candidate in (given, os.environ.get("TF_PRISM_BIN"), DEFAULT_PRISM):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise UsageError("a local streaming job runs on Beam's Prism runner, and no prism binary "
                     "was found: run bash .ci/install_runners.sh (it builds "
                     f"{DEFAULT_PRISM} from Beam's Go module), or pass --prism_location "
                     "or set TF_PRISM_BIN.")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_prism(binary: str, log_path: str) -> Tuple[subprocess.Popen, int]:
    """Starts Prism in a session of its own (a Ctrl-C in the terminal reaches only the driver,
    which drains the job; Prism must outlive the signal to finish it).

    Raises:
      UsageError: when it does not listen within 30 s.
    """
    port = _free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [binary, "--job_port", str(port), "--serve_http=false", "--log_level", "warn"],
            stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise UsageError(f"Prism ({binary}) did not start: see {log_path}")


_PRISM: List[subprocess.Popen] = []


def prepare(options: PipelineOptions,
            config: config_lib.JobConfig) -> Tuple[PipelineOptions, config_lib.JobConfig]:
    """Streaming mode; a local job gets its own Prism and a stop file.

    The SDK harness runs in this process (Prism's default LOOPBACK environment), so the live
    progress and the stop signal work as in a batch job on the in-process runner.

    Raises:
      UsageError: a local job without a Prism binary, or one that does not start.
    """
    options.view_as(StandardOptions).streaming = True
    stream = config.stream
    runner = str(options.view_as(StandardOptions).runner or "")
    if not stream.local or runner.rsplit(".", 1)[-1] not in LOCAL_RUNNERS:
        return options, config
    binary = prism_binary(options)
    scratch = tempfile.mkdtemp(prefix=f"ticketflow-stream-{config.run_id}-")
    process, port = _start_prism(binary, os.path.join(scratch, "prism.log"))
    _PRISM.append(process)
    options.view_as(StandardOptions).runner = "PrismRunner"
    no_job_deadline(options)  # a job that never ends outlives the default 5-minute deadline
    options.view_as(PortableOptions).job_endpoint = f"localhost:{port}"
    # As for every Prism job (pipeline/run.py, local_runner_options): no bundle splits.
    options.view_as(DebugOptions).add_experiment("prism_disable_sdf_split")
    stream = dataclasses.replace(stream, stop_file=os.path.join(scratch, "stop"))
    return options, dataclasses.replace(config, stream=stream)


def cleanup(config: config_lib.JobConfig) -> None:
    """Stops the local job's Prism; removes its scratch directory (stop file, Prism's log)."""
    stream = config.stream
    scratch = os.path.dirname(stream.stop_file) if stream is not None and stream.stop_file else ""
    while _PRISM:
        process = _PRISM.pop()
        if process.poll() is not None:  # it ended by itself: the job failed; say why
            _report_prism_exit(process.returncode, os.path.join(scratch, "prism.log"))
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


def _report_prism_exit(code: int, log_path: str, lines: int = 15) -> None:
    """Logs that Prism ended before the job did, with the end of its log (removed afterwards)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            tail = handle.readlines()[-lines:]
    except OSError:
        tail = []
    event(_LOG, logging.ERROR, "prism_exited", exit_code=code,
          log_tail=" | ".join(line.strip() for line in tail)[-3000:])


_RUNNING: list = []
_CUT_SHORT: list = []


def finish(result) -> dict:
    """Waits for the pipeline ``result``; returns its committed counts (``metrics.summarize``).

    The pipeline is remembered meanwhile, for the drain's time limit: a pipeline cancelled
    because its drain took longer than ``--drain_secs`` is not a failure (the job was stopped);
    its counts are what it committed, and the summary's ledger shows what was lost.
    """
    _RUNNING[:] = [result]
    try:
        result.wait_until_finish()
    except Exception:  # noqa: BLE001 - the runner's "failed in state CANCELLED"
        if not _CUT_SHORT:
            raise
        _LOG.debug("pipeline cancelled after the drain's time limit", exc_info=True)
    finally:
        _RUNNING.clear()
    return metrics_lib.summarize(result.metrics())


def watchers(config: config_lib.JobConfig,
             runner: str) -> Tuple["StreamProgress", watch.GracefulStop]:
    """The progress line and the graceful stop of a streaming job.

    The first SIGINT/SIGTERM creates the stop file (the sources stop; what was received is
    finished and written; the pipeline ends by itself). If that takes longer than
    ``--drain_secs``, the pipeline is cancelled: what it still buffered is lost, and the ledger
    says so.
    """
    reporter = StreamProgress(config, config.quiet, config.progress_interval_secs, runner)

    def stop() -> None:
        reporter.stopping()
        stream = config.stream
        if stream.stop_file:
            with open(stream.stop_file, "w", encoding="utf-8"):
                pass
        timer = threading.Timer(config.drain_secs, _drain_over, args=(config.drain_secs,))
        timer.daemon = True
        timer.start()

    # A signal of its own: the process's stop signal would make CallModel turn every ticket it
    # has not sent yet into an 'interrupted' dead letter, and a pulled message is acknowledged:
    # a drain answers what was received instead (its sources stop; see above).
    return reporter, watch.GracefulStop(config.drain_secs, graceful=True, on_stop=stop,
                                        signal_=StopSignal())


def _drain_over(drain_secs: float) -> None:
    for result in list(_RUNNING):
        _CUT_SHORT.append(drain_secs)
        event(_LOG, logging.WARNING, "drain_timeout", drain_secs=drain_secs,
              note="cancelling the pipeline: records it still buffers are not written")
        try:
            result.cancel()
        except Exception:  # noqa: BLE001 - already finished, or the runner is gone
            _LOG.debug("cancel failed", exc_info=True)


def build(p: beam.Pipeline, config: config_lib.JobConfig, results_basename: str,
          dead_letter_basename: str) -> Dict[str, beam.PCollection]:
    """Wires the streaming pipeline into ``p``; returns its results and dead letters."""
    stream = config.stream
    local = stream.local
    if stream.source == "pubsub":
        raw = p | "ReadPubsub" >> ReadPubsubTickets(
            stream.subscription, local=local, stop_file=stream.stop_file)
    else:
        raw = p | "WatchInput" >> WatchTickets(
            stream.watch_pattern, config.input_format, stream.watch_interval_secs,
            stop_file=stream.stop_file)
    # A ticket delivered twice is answered twice, from --response_store the second time (paid
    # once): a shuffle by id cannot wait for the end of an input that never ends.
    checked = raw | "ValidateTickets" >> ValidateTickets(config.fields, dedupe=False)
    batches = checked["tickets"] | "BatchTickets" >> BatchTickets(config.batch)
    called = batches | "CallModel" >> CallModel(config.llm, stop_signal=watch.stop_signal)
    results = called["results"] | "FirstResponse" >> stream_lib.RecordFirstResponse()
    dead_letters = ((checked["dead_letter"], called["dead_letter"])
                    | "AllDeadLetters" >> beam.Flatten())
    results | "WriteResults" >> WriteWindowedFiles(config.output, results_basename,
                                                   stream.window_secs)
    dead_letters | "WriteDeadLetters" >> WriteWindowedFiles(config.output, dead_letter_basename,
                                                            stream.window_secs)
    if stream.output_topic:
        results | "PublishResults" >> PublishRecords(stream.output_topic, local)
    if stream.dead_letter_topic:
        dead_letters | "PublishDeadLetters" >> PublishRecords(stream.dead_letter_topic, local)
    return {"results": results, "dead_letters": dead_letters}


class StreamProgress(watch.ProgressReporter):
    """The progress line of a job that never ends (see the module docstring)."""

    def __init__(self, config: config_lib.JobConfig, quiet: bool, interval_secs: float,
                 runner: str):
        super().__init__(watch.MODE_OFF if quiet else watch.MODE_LINES, interval_secs,
                         runner=runner)
        self._last: Optional[Tuple[float, int]] = None

    def figures(self, snap: dict) -> dict:
        received = int(snap.get("tickets_read", 0))
        answered = int(snap.get("succeeded", 0))
        dead = int(snap.get("dead_lettered", 0))
        now = self._clock()
        done = answered + dead
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = round((done - self._last[1]) * 60.0 / (now - self._last[0]), 1)
        self._last = (now, done)
        p = metrics_lib.latency_percentiles(snap, (0.5, 0.99),
                                            prefix=metrics_lib.FIRST_RESPONSE_BUCKET_PREFIX)
        out = {"received": received, "answered": answered, "dead_lettered": dead,
               "in_flight": int(snap.get("in_flight", 0)),
               "backlog": max(0, received - done), "tickets_per_min": rate,
               "first_response_p50_ms": p[0.5], "first_response_p99_ms": p[0.99],
               "rate_limited": int(snap.get("rate_limited", 0)),
               "cost_usd": round(snap.get("cost_nano_usd", 0) / 1e9, 4),
               "elapsed_secs": round(now - self._started, 1)}
        if self._stopping:
            out["state"] = "draining"
        return out
