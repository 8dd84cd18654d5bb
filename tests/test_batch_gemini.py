"""``--api batch --provider gemini``: Gemini's batch mode, through the ``google-genai`` client
against the simulator's Files API and ``batchGenerateContent``.

The line format and classification alone; the one batch driver on the Gemini client with a
fake clock shared with the simulator (rounds, a queue limit, the implicit cache, a creation in
doubt, a cancel); and end to end, ``python -m pipeline`` in a subprocess: half price, kill at
every phase then ``--resume`` pays once, the deadline answers the rest online.
"""

from __future__ import annotations

import glob
import json
import time

import pytest
from google import genai
from google.genai import errors as genai_errors

from pipeline.batch.driver import BatchDriver, DriverSettings
from pipeline.batch.files import PartWriter, iter_lines
from pipeline.batch.journal import Journal
from simulator import SimulatorConfig, start
from tests.conftest import write_jsonl
from tests.test_batch_driver import HALF, FULL, Clock
from tests.test_batch_e2e import _Pipeline, _results, _ticket
from transforms import errors
from transforms.llm.batch import (custom_id, error_of, line_id, line_tokens, outcome_record,
                                  request_body, request_line)
from transforms.llm.config import LlmConfig
from transforms.llm.providers import OK, PERMANENT, RETRYABLE
from transforms.llm.providers.gemini_batch import (MAX_BYTES, GeminiBatchClient, classify_line,
                                                   display_name)
from transforms.retry import RetryPolicy

MODEL = "gemini-2.5-flash"
ENV = {"GEMINI_API_KEY": "g-test-key"}
FAST = ("--api", "batch", "--batch_poll_secs", "0.2", "--quiet", "--model", MODEL)
CONFIG = LlmConfig(base_url=None, model=MODEL, provider="gemini")


def _params(i, system="You triage support tickets."):
    return {"model": MODEL, "max_tokens": 50,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": f"Ticket ID: T-{i}\nHelp with {i}."}]}


# ---- the line format and its classification -------------------------------------------------

def test_request_line_carries_the_online_generate_content_body():
    line = json.loads(request_line(_params(1), CONFIG))
    assert set(line) == {"key", "request"} and line_id(line) == custom_id(_params(1))
    body = request_body(line)
    assert body["systemInstruction"] == {"parts": [{"text": "You triage support tickets."}]}
    assert [c["role"] for c in body["contents"]] == ["user"]
    assert body["generationConfig"]["maxOutputTokens"] == 50
    # The system prompt and the output cap count against the queue limit as OpenAI's do.
    openai_line = json.loads(request_line(_params(1)))
    assert line_tokens(body) == line_tokens(request_body(openai_line))


def _answered(cached=0):
    return {"key": "tf-a", "response": {
        "candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 2110, "candidatesTokenCount": 5,
                          "cachedContentTokenCount": cached},
        "modelVersion": MODEL, "responseId": "resp-1"}}


def test_result_lines_are_classified_as_online_errors_are():
    ok = classify_line(_answered(cached=2000))
    assert ok.kind == OK and ok.status == 200 and ok.request_id == "resp-1"
    c = ok.completion
    assert (c["content"], c["finish_reason"]) == ("Hello", "stop")
    assert (c["prompt_tokens"], c["cached_tokens"], c["completion_tokens"]) == (2110, 2000, 5)
    record = outcome_record(ok, 1, HALF, FULL)
    assert record["cost_usd"] == pytest.approx(record["online_cost_usd"] / 2)

    # google.rpc.Status lines (numeric codes), as Gemini writes them.
    bad = classify_line({"key": "tf-a", "error": {"code": 3, "message": "bad schema"}})
    assert (bad.kind, bad.status, bad.code) == (PERMANENT, 400, "INVALID_ARGUMENT")
    assert isinstance(error_of(outcome_record(bad, 1, HALF, FULL)), errors.BadRequest)
    long = classify_line({"key": "tf-a", "error": {"code": 3, "message": "The input token "
                                                   "count (300000) exceeds the maximum"}})
    assert isinstance(error_of(outcome_record(long, 1, HALF, FULL)),
                      errors.ContextLengthExceeded)
    for code, name, cls in ((8, "RESOURCE_EXHAUSTED", errors.RateLimited),
                            (14, "UNAVAILABLE", errors.ServerError),
                            (13, "INTERNAL", errors.ServerError)):
        line = classify_line({"key": "tf-a", "error": {"code": code, "message": "x"}})
        assert (line.kind, line.code) == (RETRYABLE, name)
        assert isinstance(error_of(outcome_record(line, 1, HALF, FULL)), cls)
    # Google's HTTP error body shape is read too.
    http = classify_line({"key": "tf-a", "error": {"code": 503, "status": "UNAVAILABLE"}})
    assert (http.kind, http.status) == (RETRYABLE, 503)
    broken = classify_line({"key": "tf-a", "response": {"oops": 1}})
    assert (broken.kind, broken.code) == (RETRYABLE, "malformed_response")
    with pytest.raises(ValueError):
        classify_line({"response": {}})


# ---- the simulator's batch mode through the SDK ---------------------------------------------

def test_the_simulator_speaks_gemini_batch_mode(simulator_factory, tmp_path):
    sim = simulator_factory(batch_secs=0.3, api_key="g-test-key")
    client = genai.Client(api_key="g-test-key", http_options={
        "base_url": sim.root_url, "retry_options": {"attempts": 1}})
    lines = [request_line(_params(i), CONFIG) for i in range(3)]
    lines.append(json.dumps({"key": "bad", "request": {"contents": [], "bogus": 1}}))
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    uploaded = client.files.upload(file=str(path), config={"mime_type": "application/jsonl"})
    assert uploaded.name.startswith("files/") and uploaded.size_bytes == path.stat().st_size
    job = client.batches.create(model=MODEL, src=uploaded.name,
                                config={"display_name": "mine"})
    assert job.state.value == "JOB_STATE_PENDING" and job.display_name == "mine"
    while not (got := client.batches.get(name=job.name)).done:
        time.sleep(0.05)
    assert got.state.value == "JOB_STATE_SUCCEEDED" and got.dest.file_name
    results = {r["key"]: r for r in map(json.loads, client.files.download(
        file=got.dest.file_name).decode().splitlines())}
    assert results["bad"]["error"]["code"] == 3  # INVALID_ARGUMENT, as a google.rpc.Status
    online = client.models.generate_content(
        model=MODEL, contents="Ticket ID: T-0\nHelp with 0.",
        config={"system_instruction": "You triage support tickets.", "max_output_tokens": 50})
    first = json.loads(lines[0])["key"]
    assert results[first]["response"]["candidates"][0]["content"]["parts"][0]["text"] == \
        online.text  # the same answer as online
    assert [j.name for j in client.batches.list()] == [job.name]
    # Inlined requests: the answers come back inlined.
    inline = client.batches.create(model=MODEL, src=[{"contents": [
        {"role": "user", "parts": [{"text": "Hi"}]}]}])
    while not (got := client.batches.get(name=inline.name)).done:
        time.sleep(0.05)
    assert got.dest.inlined_responses[0].response.text
    wrong = genai.Client(api_key="wrong", http_options={"base_url": sim.root_url})
    with pytest.raises(genai_errors.ClientError):
        wrong.batches.get(name=job.name)
    # A cancelled batch ends CANCELLED; the requests it never ran have no line.
    other = client.batches.create(model=MODEL, src=uploaded.name)
    client.batches.cancel(name=other.name)
    while not (got := client.batches.get(name=other.name)).done:
        time.sleep(0.05)
    assert got.state.value == "JOB_STATE_CANCELLED"


# ---- the one driver on the Gemini client ------------------------------------------------------

@pytest.fixture
def gemini_world(tmp_path):
    sims = []

    def make(n, max_lines=10, system="You triage support tickets.", **flags):
        clock = Clock()
        sim = start(SimulatorConfig(port=0, **flags), clock=clock)
        sims.append(sim)
        writer = PartWriter(str(tmp_path / "batch" / "J1" / "round-1" / "requests"), max_lines,
                            MAX_BYTES)
        for i in range(n):
            line = request_line(_params(i, system), CONFIG)
            writer.add(line, line_tokens(request_body(json.loads(line))))
        journal = Journal(str(tmp_path), wall=clock)
        journal.append("job", job="J1", fingerprint="f")
        journal.append("packed", job="J1", round=1, parts=writer.close())

        def driver(max_rounds=3, deadline=0.0, poll=1.0):
            settings = DriverSettings(
                work_dir=str(tmp_path / "batch" / "J1"), max_lines=max_lines,
                max_bytes=MAX_BYTES, max_enqueued_tokens=0, deadline_secs=deadline,
                poll_secs=poll, max_rounds=max_rounds, prices=(HALF, FULL))
            client = GeminiBatchClient(sim.base_url, "test", model=MODEL, timeout=10,
                                       retry=RetryPolicy(max_retries=2), sleep=lambda s: None)
            return BatchDriver(settings, client, journal, Journal(str(tmp_path)).read(),
                               wall=clock, sleep=clock.sleep)
        return driver, sim
    yield make
    for sim in sims:
        sim.close()


def _outcomes(tmp_path):
    return [json.loads(line) for path in sorted((tmp_path / "batch" / "J1").glob(
        "round-*/outcomes-*.jsonl")) for line in iter_lines(str(path))]


def test_the_driver_resubmits_only_missing_requests_in_rounds(gemini_world, tmp_path):
    driver, sim = gemini_world(20, batch_secs=10, batch_expire_fraction=0.25, seed=3)
    assert driver(max_rounds=3).run() is True
    # 20 requests in two batches of 10; a quarter of each expires (no line) and goes again.
    assert sim.stats()["batch_requests"] == 20 + 6 + 2
    assert sim.stats()["files_uploaded"] == 4 == sim.stats()["batches_created"]  # 2 + 1 + 1
    outcomes = _outcomes(tmp_path)
    assert len({o["custom_id"] for o in outcomes}) == 20
    done = [o for o in outcomes if "completion" in o]
    assert all(o["provider"] == "gemini" for o in done)
    assert [o["code"] for o in outcomes if "completion" not in o] == ["missing_from_output"]
    assert len(done) == 19 and all(o["cost_usd"] > 0 for o in done)


def test_failed_lines_go_again_and_a_full_queue_waits(gemini_world, tmp_path):
    # Room for one part: Gemini refuses the second create (429), the driver settles it by
    # listing (nothing created), then creates it once the first has ended. INTERNAL lines go
    # to the next round, alone.
    driver, sim = gemini_world(20, batch_secs=10, batch_max_enqueued_tokens=1000,
                               batch_p_line_fail=0.2, seed=5)
    assert driver(max_rounds=2).run() is True
    assert sim.stats()["batches_created"] == 3  # 2 parts, then one of the 4 failed lines
    assert sim.stats()["batch_requests"] == 20 + 4
    outcomes = _outcomes(tmp_path)
    assert len(outcomes) == 20 and all(o["provider"] == "gemini" for o in outcomes)
    failed = [o for o in outcomes if "completion" not in o]
    assert [(o["code"], o["round"]) for o in failed] == [("INTERNAL", 2)]


def test_a_batch_reads_its_implicitly_cached_prefix(gemini_world, tmp_path):
    manual = "You triage support tickets by our refund policy. " * 400  # > Flash's minimum
    driver, _ = gemini_world(10, system=manual, batch_secs=60)
    assert driver(poll=10).run() is True
    done = [o["completion"] for o in _outcomes(tmp_path)]
    assert len(done) == 10
    assert sum(1 for c in done if c["cached_tokens"] > 2048) == 9  # all but the first


def test_a_creation_in_doubt_is_found_by_listing(gemini_world, tmp_path):
    driver, sim = gemini_world(5, batch_secs=5)
    journal = Journal(str(tmp_path))
    part = journal.read()[1]["parts"][0]
    journal.append("uploading", job="J1", round=1, part=part["part"])
    client = genai.Client(api_key="test", http_options={"base_url": sim.root_url})
    uploaded = client.files.upload(file=part["path"], config={"mime_type": "application/jsonl"})
    journal.append("uploaded", job="J1", round=1, part=part["part"], file_id=uploaded.name)
    journal.append("creating", job="J1", round=1, part=part["part"], attempt=1,
                   file_id=uploaded.name)
    tags = {"ticketflow_job": "J1", "ticketflow_part": part["part"], "ticketflow_round": "1",
            "ticketflow_attempt": "1"}
    target = client.batches.create(model=MODEL, src=uploaded.name,
                                   config={"display_name": display_name(tags)})  # the crash
    client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "other"})
    d = driver()
    assert d.run() is True
    assert sim.stats()["batches_created"] == 2  # found, not created again
    assert d.state.batches_found == 1 and d.state.round_parts(1)[0].batch_id == target.name


def test_the_deadline_cancels_and_keeps_what_ended(gemini_world, tmp_path):
    driver, sim = gemini_world(10, batch_secs=100)
    d = driver(deadline=50)
    assert d.run() is True
    assert sim.stats()["batches_cancelled"] == 1
    part = d.state.round_parts(1)[0]
    assert part.status == "cancelled" and 0 < part.counts["ok"] < 10
    assert part.counts["leftover"] == 10 - part.counts["ok"]  # answered online


# ---- end to end --------------------------------------------------------------------------------

def test_batch_costs_half_of_online_with_the_same_answers(simulator_factory, run_pipeline,
                                                          tmp_path):
    sim = simulator_factory(batch_secs=0.5)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(30)])
    common = ("--input", str(path), "--base_url", sim.base_url, "--model", MODEL,
              "--provider", "gemini")
    online = run_pipeline(*common, "--quiet", env=ENV)
    assert online.returncode == 0, online.stderr
    batch = run_pipeline(*common, *FAST, "--batch_max_lines", "20", env=ENV)
    assert batch.returncode == 0, batch.stderr
    by_id = {r["id"]: r for r in online.results()}
    answers = batch.results()
    assert len(answers) == 30 and all(r["response"] == by_id[r["id"]]["response"]
                                      for r in answers)
    ratio = sum(r["cost_usd"] for r in answers) / sum(r["cost_usd"] for r in by_id.values())
    print(f"gemini batch/online cost ratio: {ratio:.6f}")
    assert ratio == pytest.approx(0.5, rel=1e-4)
    summary = batch.summary()
    assert summary["ledger_balanced"] and summary["batch"]["answered_by_batch"] == 30
    assert summary["batch"]["batches_created"] == 2 == sim.stats()["batches_created"]
    assert sim.stats()["gemini_requests"] == 30  # the online run's only
    assert "g-test-key" not in batch.stderr + batch.stdout


def test_the_deadline_answers_the_rest_online(simulator_factory, run_pipeline, tmp_path):
    sim = simulator_factory(batch_secs=12)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(20)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, *FAST,
                       "--batch_deadline_secs", "7", env=ENV)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["ledger_balanced"] and summary["succeeded"] == 20
    by_batch, online = summary["batch"]["answered_by_batch"], summary["batch"]["answered_online"]
    assert by_batch > 0 and online > 0 and by_batch + online == 20
    assert sim.stats()["batches_cancelled"] == 1
    assert sim.stats()["gemini_requests"] == online
    assert summary["cost_usd"] < summary["online_cost_usd"]


@pytest.mark.e2e
def test_kill_at_every_phase_then_resume_pays_once(simulator_factory, tmp_path, monkeypatch):
    # The upload's last call and batchGenerateContent answer 1.5 s AFTER the file or batch
    # exists: a kill then leaves one the killed run never heard of.
    monkeypatch.setenv("GEMINI_API_KEY", "g-test-key")
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

    stats = killed_at("batch_packing", resume=False)
    assert (stats["files_uploaded"], stats["batches_created"]) == (0, 0)
    stats = killed_at("batch_uploading", pause=0.7)
    assert (stats["files_uploaded"], stats["batches_created"]) == (1, 0)
    assert killed_at("batch_creating", pause=0.7)["batches_created"] == 1
    assert killed_at("batch_found")["batches_created"] == 1
    stats = killed_at("batch_collecting")
    assert stats["batches_created"] == 1 and not _results(out)

    final = _Pipeline(args + ["--resume"])
    assert final.proc.wait(timeout=120) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ledger_balanced"] and summary["succeeded"] == 20
    assert sorted(r["id"] for r in _results(out)) == [f"T-{i:05d}" for i in range(20)]
    stats = sim.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 20  # submitted once
    assert stats["gemini_requests"] == 0  # nothing paid online
    assert summary["batch"]["batches_found_by_listing"] == 1
    assert glob.glob(str(out / "batch" / "*" / "round-1" / "output-*.jsonl"))
