"""``--api batch`` end to end: ``python -m pipeline`` in a subprocess against the simulator's
Batch API, through the real ``openai`` client. The simulator runs in the test process, so a test
may kill -9 the pipeline at any moment and read what the provider saw (``/stats``)."""

from __future__ import annotations

import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import EXAMPLES, REPO, write_jsonl

FAST = ("--api", "batch", "--batch_poll_secs", "0.2", "--quiet")


def _ticket(i, extra=""):
    return {"id": f"T-{i:05d}", "subject": f"Subject {i}", "body": f"Ticket body {i}.{extra}"}


def _results(output):
    records = []
    for path in sorted(glob.glob(str(output / "results-*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def test_batch_answers_equal_online_ones_at_half_the_cost(simulator_factory, run_pipeline):
    # Three parts of 100 requests (about 39,000 enqueued tokens each) against a provider that
    # allows 60,000 enqueued tokens: the driver learns the limit from token_limit_exceeded and
    # submits the parts in waves.
    sim = simulator_factory(batch_secs=0.5, batch_max_enqueued_tokens=60_000)
    tickets = str(EXAMPLES / "tickets.jsonl")
    online = run_pipeline("--input", tickets, "--base_url", sim.base_url, "--quiet")
    assert online.returncode == 0, online.stderr
    batch = run_pipeline("--input", tickets, "--base_url", sim.base_url, *FAST,
                         "--batch_max_lines", "100")
    assert batch.returncode == 0, batch.stderr
    by_id = {r["id"]: r for r in online.results()}
    answers = batch.results()
    assert len(answers) == 300 and {r["id"] for r in answers} == set(by_id)
    assert all(r["response"] == by_id[r["id"]]["response"] for r in answers)
    assert all(r["attempts"] == 1 and r["cost_usd"] > 0 for r in answers)
    ratio = sum(r["cost_usd"] for r in answers) / sum(r["cost_usd"] for r in by_id.values())
    assert ratio == pytest.approx(0.5, rel=1e-4)
    summary = batch.summary()
    assert summary["ledger_balanced"] and summary["api"] == "batch"
    assert summary["online_cost_usd"] == pytest.approx(online.summary()["cost_usd"], abs=2e-6)
    assert summary["cost_usd"] == pytest.approx(summary["online_cost_usd"] / 2, abs=2e-6)
    assert summary["batch"]["answered_by_batch"] == 300
    assert summary["batch"]["answered_online"] == 0 and summary["batch"]["rounds"] == 1
    waits = summary["batch"]["token_limit_waits"]
    assert waits >= 1 and "batch_token_limit" in batch.stderr
    stats = sim.stats()
    assert stats["successful_completions"] == 300  # the online run's only
    # A batch refused for the token limit is created (and counted), but runs no line.
    assert stats["batches_created"] == summary["batch"]["batches_created"] == 3 + waits
    assert stats["batch_requests"] == 300 + 100 * waits


def test_submit_only_then_resume_rounds_permanent_errors_and_repairs(simulator_factory,
                                                                     run_pipeline, tmp_path):
    # Every batch leaves a quarter of its lines undone (expired): only those are resubmitted,
    # up to --max_retries rounds; a filtered ticket is a dead letter with the online reason; an
    # invalid structured answer gets its one repair online.
    sim = simulator_factory(batch_secs=0.5, batch_expire_fraction=0.25, seed=2)
    path = write_jsonl(tmp_path / "t.jsonl", [
        _ticket(i, " CONTENT_FILTER" if i == 3 else " INVALID_OUTPUT_N_TIMES:1" if i == 5
                else "") for i in range(20)])
    out = tmp_path / "out"
    flags = ("--input", str(path), "--base_url", sim.base_url, "--max_retries", "2",
             "--response_schema", str(EXAMPLES / "triage_schema.json"), *FAST)
    submitted = run_pipeline(*flags, "--batch_submit_only", output=out)
    assert submitted.returncode == 0, submitted.stderr
    assert "batch job submitted" in submitted.stdout and "--resume" in submitted.stdout
    assert not _results(out) and sim.stats()["batches_created"] == 1

    again = run_pipeline(*flags, output=out)  # without --resume: refused, nothing submitted
    assert again.returncode == 2 and "--resume" in again.stderr
    collected = run_pipeline(*flags, "--resume", output=out)
    assert collected.returncode == 0, collected.stderr
    summary = collected.summary()
    assert summary["ledger_balanced"] and summary["read"] == 20
    # 20 lines, then the 5 undone, then the 2 undone of those; 1 is left after 3 rounds.
    assert sim.stats()["batch_requests"] == 20 + 5 + 2
    assert summary["batch"]["rounds"] == 3 and summary["batch"]["batches_created"] == 3
    dead = collected.dead_letters_by_id()
    assert dead["T-00003"]["reason"] == "content_filter"
    assert dead["T-00003"]["http_status"] == 400
    assert sorted(d["reason"] for d in dead.values()) == ["content_filter", "retries_exhausted"]
    results = {r["id"]: r for r in collected.results()}
    assert len(results) == 18 and all(r["output"]["category"] for r in results.values())
    assert results["T-00005"]["attempts"] >= 2  # the batch's answer, then the repair online
    assert sim.stats()["successful_completions"] == 1  # the repair: the only online request


def test_the_deadline_cancels_and_answers_the_rest_online(simulator_factory, run_pipeline,
                                                          tmp_path):
    sim = simulator_factory(batch_secs=10)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(30)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, *FAST,
                       "--batch_deadline_secs", "3")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["ledger_balanced"] and summary["succeeded"] == 30
    by_batch, online = summary["batch"]["answered_by_batch"], summary["batch"]["answered_online"]
    assert by_batch > 0 and online > 0 and by_batch + online == 30
    assert sim.stats()["batches_cancelled"] == 1
    assert sim.stats()["successful_completions"] == online
    assert summary["cost_usd"] < summary["online_cost_usd"]


def test_a_cancel_longer_than_the_wait_is_abandoned_and_answered_online(simulator_factory,
                                                                       run_pipeline, tmp_path):
    # A cancel lasts min(10% of --batch_secs, 600 s): 600 s here, far longer than the wait.
    sim = simulator_factory(batch_secs=100_000)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(5)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, *FAST,
                       "--batch_deadline_secs", "6", "--batch_cancel_wait_secs", "1")
    assert run.returncode == 0, run.stderr
    journal = [json.loads(open(p, encoding="utf-8").read()) for p in
               sorted(glob.glob(str(run.output / "batch" / "journal" / "*.json")))]
    at = {e["event"]: e["at"] for e in journal}
    # The deadline held: cancelled at 6 s (long enough for the batch to exist on a loaded
    # machine), given up 1 s later (plus a poll), not 600 s later.
    assert "cancelling" in at, [e["event"] for e in journal]
    assert 6 <= at["cancelling"] - at["job"] < 7.5
    assert 1 <= at["cancel_abandoned"] - at["cancelling"] < 2.5
    summary = run.summary()
    assert summary["ledger_balanced"] and summary["succeeded"] == 5
    batch = summary["batch"]
    assert batch["answered_online"] == 5 and batch["answered_by_batch"] == 0
    ids = batch["abandoned_batch_ids"]
    assert batch["batches_abandoned"] == 1 == len(ids) and batch["may_be_billed_twice"] == 5
    assert batch["abandoned_seen_ended"] == 0 and batch["billed_twice"] == 0
    assert sim.stats()["batches_cancelled"] == 1 and sim.stats()["successful_completions"] == 5
    warnings = [line for line in run.stderr.splitlines() if "batch_may_bill_twice" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and ids[0] in warnings[0]
    assert "up to 5 ticket(s) may be billed by both" in run.stdout and ids[0] in run.stdout


class _Pipeline:
    """``python -m pipeline`` whose stderr lines are read as they come."""

    def __init__(self, args):
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if needle in self.lines.get(timeout=0.05):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        raise AssertionError(f"{needle!r} never logged (exit {self.proc.poll()})")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.mark.e2e
def test_kill_at_every_phase_then_resume_pays_once(simulator_factory, tmp_path):
    # The simulator answers POST /v1/files and POST /v1/batches 1.5 s AFTER creating the
    # object, so a kill in that window leaves an upload or a batch the killed run never heard of.
    sim = simulator_factory(batch_secs=3, batch_stall_secs=1.5)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(20)])
    out = tmp_path / "out"
    args = ["--input", str(path), "--output", str(out), "--base_url", sim.base_url, *FAST]

    def killed_at(needle, pause=0.0, resume=True):
        run = _Pipeline(args + (["--resume"] if resume else []))
        run.wait_for(needle)
        time.sleep(pause)
        run.kill()
        return sim.stats()

    stats = killed_at("batch_packing", resume=False)          # packing
    assert (stats["files_uploaded"], stats["batches_created"]) == (0, 0)
    stats = killed_at("batch_uploading", pause=0.7)           # uploading: the file exists
    assert (stats["files_uploaded"], stats["batches_created"]) == (1, 0)
    stats = killed_at("batch_creating", pause=0.7)            # creating: the batch exists
    assert stats["batches_created"] == 1
    stats = killed_at("batch_found")                          # found by listing, then waiting
    assert stats["batches_created"] == 1
    stats = killed_at("batch_collecting")                     # collecting
    assert stats["batches_created"] == 1 and not _results(out)

    final = _Pipeline(args + ["--resume"])
    assert final.proc.wait(timeout=120) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ledger_balanced"] and summary["succeeded"] == 20
    ids = [r["id"] for r in _results(out)]
    assert sorted(ids) == [f"T-{i:05d}" for i in range(20)]  # each ticket answered once
    stats = sim.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 20  # submitted once
    assert stats["successful_completions"] == 0  # nothing paid online
    assert summary["batch"]["batches_found_by_listing"] == 1


def test_both_phases_translate_to_dataflow_jobs_offline():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.batch import run as batch_run
    from pipeline import config as config_lib
    from pipeline import run as run_lib
    from tests.test_templates import DRY_RUN_ARGV

    options = PipelineOptions(DRY_RUN_ARGV + ["--api", "batch"])
    config = config_lib.from_options(options)
    collect_config = batch_run.dry_run_pack(options, config)  # the pack job, translated
    pack = beam.Pipeline(options=options)
    batch_run.build_pack(pack, config, "gs://tf-dry-bucket/out/batch/J/round-1/requests")
    labels = {t.unique_name for t in
              pack.run().job.proto_pipeline.components.transforms.values()}
    for step in ("ReadTickets", "ValidateTickets", "PackBatchRequests",
                 "PackBatchRequests/WriteRequestFiles"):
        assert step in labels, f"{step} missing from the pack job"
    collect = beam.Pipeline(options=options)
    run_lib.build(collect, collect_config)
    job = collect.run().job
    labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in ("AttachBatchOutcomes", "AttachBatchOutcomes/JoinOutcomes", "CallModel",
                 "WriteResults", "WriteDeadLetters"):
        assert step in labels, f"{step} missing from the collect job"
    assert "sk-" not in json.dumps(type(job.proto).to_dict(job.proto), default=str)
