"""``--api batch --provider anthropic``: Anthropic's Message Batches, through the ``anthropic``
client against the simulator's ``/v1/messages/batches``.

The line format and classification alone; the one batch driver on the Anthropic client with a
fake clock shared with the simulator (rounds, a cancel, a creation in doubt); and end to end,
``python -m pipeline`` in a subprocess: half price, kill at every phase then ``--resume`` pays
once, the deadline answers the rest online.
"""

from __future__ import annotations

import glob
import json
import time

import anthropic
import pytest

from pipeline.batch.driver import BatchDriver, DriverSettings
from pipeline.batch.files import PartWriter, iter_lines
from pipeline.batch.journal import Journal
from simulator import SimulatorConfig, start
from tests.conftest import write_jsonl
from tests.test_batch_driver import HALF, FULL, Clock
from tests.test_batch_e2e import _Pipeline, _results, _ticket
from transforms import errors
from transforms.llm.batch import (BatchNotRun, custom_id, error_of, line_tokens, outcome_record,
                                  request_body, request_line)
from transforms.llm.config import LlmConfig
from transforms.llm.providers import OK, PERMANENT, RETRYABLE
from transforms.llm.providers.anthropic_batch import (MAX_BYTES, AnthropicBatchClient,
                                                      classify_line)
from transforms.retry import RetryPolicy

MODEL = "claude-haiku-4-5"
ENV = {"ANTHROPIC_API_KEY": "sk-ant-test"}
FAST = ("--api", "batch", "--batch_poll_secs", "0.2", "--quiet", "--model", MODEL)


def _params(i):
    return {"model": MODEL, "max_tokens": 50,
            "messages": [{"role": "system", "content": "You triage support tickets."},
                         {"role": "user", "content": f"Ticket ID: T-{i}\nHelp with {i}."}]}


# ---- the line format and its classification -------------------------------------------------

def test_request_line_carries_the_online_messages_body_with_the_cache_ttl():
    config = LlmConfig(base_url=None, model=MODEL, provider="anthropic", cache_ttl="1h")
    line = json.loads(request_line(_params(1), config))
    assert set(line) == {"custom_id", "params"} and line["custom_id"] == custom_id(_params(1))
    body = line["params"]
    assert body["system"] == [{"type": "text", "text": "You triage support tickets.",
                               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert [m["role"] for m in body["messages"]] == ["user"] and body["max_tokens"] == 50
    # The system prompt counts against the limits as OpenAI's system message does.
    openai_line = json.loads(request_line(_params(1)))
    assert line_tokens(request_body(line)) == line_tokens(request_body(openai_line))


def _succeeded(read=0, written=0):
    return {"custom_id": "tf-a", "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": written, "output_tokens": 5}}}}


def _errored(kind, message="boom"):
    return {"custom_id": "tf-a", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": kind, "message": message}}}}


def test_results_are_classified_as_online_errors_are():
    ok = classify_line(_succeeded(read=2000, written=100))
    assert ok.kind == OK and ok.status == 200 and ok.request_id == "msg_1"
    c = ok.completion
    assert (c["content"], c["finish_reason"]) == ("Hello", "stop")
    assert (c["prompt_tokens"], c["cached_tokens"], c["completion_tokens"]) == (2110, 2000, 5)
    assert (c["cache_read_input_tokens"], c["cache_creation_input_tokens"]) == (2000, 100)
    record = outcome_record(ok, 1, HALF, FULL)
    assert record["cost_usd"] == pytest.approx(record["online_cost_usd"] / 2)

    bad = classify_line(_errored("invalid_request_error", "max_tokens: too large"))
    assert (bad.kind, bad.status, bad.code) == (PERMANENT, 400, "invalid_request_error")
    assert isinstance(error_of(outcome_record(bad, 1, HALF, FULL)), errors.BadRequest)
    long = classify_line(_errored("invalid_request_error", "prompt is too long: 300000 tokens"))
    assert isinstance(error_of(outcome_record(long, 1, HALF, FULL)),
                      errors.ContextLengthExceeded)
    for kind, cls in (("api_error", errors.ServerError), ("overloaded_error", errors.ServerError),
                      ("rate_limit_error", errors.RateLimited)):
        line = classify_line(_errored(kind))
        assert line.kind == RETRYABLE, kind
        assert isinstance(error_of(outcome_record(line, 1, HALF, FULL)), cls)
    for kind, code in (("canceled", "batch_cancelled"), ("expired", "batch_expired")):
        line = classify_line({"custom_id": "tf-a", "result": {"type": kind}})
        assert (line.kind, line.status, line.code) == (RETRYABLE, None, code)
        assert isinstance(error_of(outcome_record(line, 1, HALF, FULL)), BatchNotRun)
    broken = classify_line({"custom_id": "tf-a", "result": {"type": "succeeded",
                                                            "message": {"type": "oops"}}})
    assert (broken.kind, broken.code) == (RETRYABLE, "malformed_response")
    with pytest.raises(ValueError):
        classify_line({"result": {"type": "expired"}})


def test_batch_max_lines_is_the_providers_limit():
    from pipeline import config as config_lib
    from pipeline.options import TicketflowOptions

    def batch_api(*flags):
        return config_lib.from_options(TicketflowOptions(
            ["--input", "x.jsonl", "--output", "out", "--simulate", "--api", "batch",
             *flags])).batch_api

    assert batch_api("--model", MODEL, "--batch_max_lines", "100000").max_lines == 100_000
    with pytest.raises(config_lib.ConfigError, match="between 1 and 50000"):
        batch_api("--batch_max_lines", "100000")  # OpenAI's limit
    with pytest.raises(config_lib.ConfigError, match="between 1 and 100000"):
        batch_api("--model", MODEL, "--batch_max_lines", "100001")


# ---- the simulator's Message Batches through the SDK -----------------------------------------

def test_the_simulator_speaks_message_batches(simulator_factory):
    sim = simulator_factory(batch_secs=0.3, api_key="sk-ant-test")
    client = anthropic.Anthropic(base_url=sim.root_url, api_key="sk-ant-test", max_retries=0)
    requests = [{"custom_id": f"r-{i}", "params": {
        "model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": f"Hi {i}"}]}}
        for i in range(3)]
    requests.append({"custom_id": "bad", "params": {"model": MODEL, "max_tokens": 0,
                                                    "messages": []}})
    batch = client.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4
    assert batch.results_url is None
    while (got := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        time.sleep(0.05)
    assert got.results_url.endswith(f"/v1/messages/batches/{batch.id}/results")
    assert (got.request_counts.succeeded, got.request_counts.errored) == (3, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"
    online = client.messages.create(**requests[0]["params"])
    assert results["r-0"].message.content == online.content  # the same answer as online
    assert [b.id for b in client.messages.batches.list()] == [batch.id]
    with pytest.raises(anthropic.BadRequestError):  # a duplicate custom_id: refused at once
        client.messages.batches.create(requests=requests[:1] * 2)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=sim.root_url, api_key="wrong",
                            max_retries=0).messages.batches.list()
    # A cancelled batch ends with its unrun requests "canceled".
    other = client.messages.batches.create(requests=requests[:3])
    assert client.messages.batches.cancel(other.id).processing_status == "canceling"
    while (got := client.messages.batches.retrieve(other.id)).processing_status != "ended":
        time.sleep(0.05)
    assert got.cancel_initiated_at is not None and got.request_counts.canceled == 3
    assert {r.result.type for r in client.messages.batches.results(other.id)} == {"canceled"}


# ---- the one driver on the Anthropic client ---------------------------------------------------

@pytest.fixture
def anthropic_world(tmp_path):
    sims = []

    def make(n, max_lines=10, system=None, cache_ttl="5m", **flags):
        clock = Clock()
        sim = start(SimulatorConfig(port=0, **flags), clock=clock)
        sims.append(sim)
        config = LlmConfig(base_url=None, model=MODEL, provider="anthropic",
                           cache_ttl=cache_ttl)
        writer = PartWriter(str(tmp_path / "batch" / "J1" / "round-1" / "requests"), max_lines,
                            MAX_BYTES)
        for i in range(n):
            params = _params(i)
            if system:
                params["messages"][0]["content"] = system
            line = request_line(params, config)
            writer.add(line, line_tokens(request_body(json.loads(line))))
        journal = Journal(str(tmp_path), wall=clock)
        journal.append("job", job="J1", fingerprint="f")
        journal.append("packed", job="J1", round=1, parts=writer.close())

        def driver(max_rounds=3, deadline=0.0, poll=1.0):
            settings = DriverSettings(
                work_dir=str(tmp_path / "batch" / "J1"), max_lines=max_lines,
                max_bytes=MAX_BYTES, max_enqueued_tokens=0, deadline_secs=deadline,
                poll_secs=poll, max_rounds=max_rounds, prices=(HALF, FULL))
            client = AnthropicBatchClient(sim.base_url, "test", timeout=10,
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


def test_the_driver_resubmits_only_expired_requests_in_rounds(anthropic_world, tmp_path):
    driver, sim = anthropic_world(20, batch_secs=10, batch_expire_fraction=0.25, seed=3)
    d = driver(max_rounds=3)
    assert d.run() is True
    # 20 requests in two batches of 10; a quarter of each expires and goes again, twice.
    assert sim.stats()["batch_requests"] == 20 + 6 + 2
    assert sim.stats()["files_uploaded"] == 0  # no upload step at Anthropic
    outcomes = _outcomes(tmp_path)
    assert len({o["custom_id"] for o in outcomes}) == 20
    done = [o for o in outcomes if "completion" in o]
    assert all(o["provider"] == "anthropic" for o in outcomes)
    assert [o["code"] for o in outcomes if "completion" not in o] == ["batch_expired"]
    assert len(done) == 19 and all(o["cost_usd"] > 0 for o in done)


def test_a_create_refused_for_the_queue_limit_waits_for_room(anthropic_world, tmp_path):
    # Room for one part of 10 requests: Anthropic refuses the second create with a 429, so the
    # driver settles it by listing (nothing created), then creates it once the first has ended.
    # Failed lines (api_error) go to the next round, alone.
    driver, sim = anthropic_world(20, batch_secs=10, batch_max_enqueued_tokens=1500,
                                  batch_p_line_fail=0.2, seed=5)
    d = driver(max_rounds=2)
    assert d.run() is True
    assert sim.stats()["batches_created"] == 3  # 2 parts, then one of the 4 failed lines
    assert sim.stats()["batch_requests"] == 20 + 4
    outcomes = _outcomes(tmp_path)
    assert len(outcomes) == 20 and all(o["provider"] == "anthropic" for o in outcomes)
    failed = [o for o in outcomes if "completion" not in o]
    # round(20% of 4) of the second round's lines fail again: exhausted after --max_retries 1.
    assert [(o["code"], o["round"]) for o in failed] == [("api_error", 2)]


def test_a_part_refused_with_nothing_running_goes_online(anthropic_world, tmp_path):
    # A queue limit no part fits: refused max_rounds + 1 times alone, then skipped, not looped.
    driver, sim = anthropic_world(10, batch_secs=10, batch_max_enqueued_tokens=500)
    d = driver(max_rounds=2)
    assert d.run() is True
    assert sim.stats()["batches_created"] == 0 and not _outcomes(tmp_path)
    assert d.state.round_parts(1)[0].state == "skipped"


def test_a_batch_reads_its_one_hour_cached_prefix(anthropic_world, tmp_path):
    # The requests of a 2-hour batch run minutes apart: a 1-hour cached system prompt is written
    # by the first and read by the others (a 5-minute one would have expired between them).
    manual = "You triage support tickets by our refund policy. " * 400  # > Haiku's minimum
    driver, _ = anthropic_world(10, system=manual, cache_ttl="1h", batch_secs=7200)
    assert driver(poll=600).run() is True
    done = [o["completion"] for o in _outcomes(tmp_path)]
    assert len(done) == 10
    assert sum(1 for c in done if c["cache_creation_input_tokens"] > 2048) == 1
    reads = [c for c in done if c["cache_read_input_tokens"] > 2048]
    assert len(reads) == 9 and all(c["cached_tokens"] == c["cache_read_input_tokens"]
                                   for c in reads)


def test_a_creation_in_doubt_is_found_by_listing(anthropic_world, tmp_path):
    driver, sim = anthropic_world(5, batch_secs=5)
    journal = Journal(str(tmp_path))
    events = journal.read()
    part = events[1]["parts"][0]
    journal.append("creating", job="J1", round=1, part=part["part"], attempt=1)
    client = anthropic.Anthropic(base_url=sim.root_url, api_key="test", max_retries=0)
    requests = [json.loads(line) for line in iter_lines(part["path"])]
    target = client.messages.batches.create(requests=requests)  # the crash: never journaled
    client.messages.batches.create(requests=requests[:2])  # another size: not ours
    d = driver()
    assert d.run() is True
    assert sim.stats()["batches_created"] == 2  # found, not created again
    assert d.state.batches_found == 1 and d.state.round_parts(1)[0].batch_id == target.id


def test_the_deadline_cancels_and_keeps_what_ended(anthropic_world, tmp_path):
    driver, sim = anthropic_world(10, batch_secs=100)
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
    common = ("--input", str(path), "--base_url", sim.base_url, "--model", MODEL)
    online = run_pipeline(*common, "--quiet", env=ENV)
    assert online.returncode == 0, online.stderr
    batch = run_pipeline(*common, *FAST, "--batch_max_lines", "20", env=ENV)
    assert batch.returncode == 0, batch.stderr
    by_id = {r["id"]: r for r in online.results()}
    answers = batch.results()
    assert len(answers) == 30 and all(r["response"] == by_id[r["id"]]["response"]
                                      for r in answers)
    ratio = sum(r["cost_usd"] for r in answers) / sum(r["cost_usd"] for r in by_id.values())
    print(f"anthropic batch/online cost ratio: {ratio:.6f}")
    assert ratio == pytest.approx(0.5, rel=1e-4)
    summary = batch.summary()
    assert summary["ledger_balanced"] and summary["batch"]["answered_by_batch"] == 30
    assert summary["batch"]["batches_created"] == 2 == sim.stats()["batches_created"]
    assert sim.stats()["anthropic_requests"] == 30  # the online run's only
    assert "sk-ant-test" not in batch.stderr + batch.stdout


def test_the_deadline_answers_the_rest_online(simulator_factory, run_pipeline, tmp_path):
    # The deadline counts from the job's start, packing included (seconds on a busy machine):
    # 7 s leaves the batch a few seconds of its 12 before it is cancelled.
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
    assert sim.stats()["anthropic_requests"] == online
    assert summary["cost_usd"] < summary["online_cost_usd"]


@pytest.mark.e2e
def test_kill_at_every_phase_then_resume_pays_once(simulator_factory, tmp_path, monkeypatch):
    # POST /v1/messages/batches answers 1.5 s AFTER creating the batch: a kill then leaves a
    # batch the killed run never heard of, which the resumed run finds by listing.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
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

    assert killed_at("batch_packing", resume=False)["batches_created"] == 0
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
    assert stats["anthropic_requests"] == 0  # nothing paid online
    assert summary["batch"]["batches_found_by_listing"] == 1
    assert glob.glob(str(out / "batch" / "*" / "round-1" / "output-*.jsonl"))
