"""Transforms under TestPipeline, asserting on both the main and the dead-letter outputs."""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.batch import BatchConfig, BatchTickets, key_of, stable_shard
from transforms.llm import CallModel, LlmConfig
from transforms.read import RawRecord, ReadTickets, json_safe
from transforms.records import Ticket
from transforms.retry import RetryPolicy
from transforms.validate import FieldMapping, ValidateTickets


def _raw(line, n, source="in.jsonl"):
    return RawRecord(source, n, line if isinstance(line, str) else json.dumps(line))


def test_validate_splits_tickets_and_dead_letters():
    records = [
        _raw({"id": "a", "subject": "S", "body": "hello"}, 1),
        _raw({"id": "b", "body": ""}, 2),
        _raw("oops", 3),
        _raw({"id": "a", "body": "again"}, 4),
        _raw({"ticket_no": 5, "text": "other field names"}, 5),
    ]
    with TestPipeline() as p:
        out = (p | beam.Create(records)
               | ValidateTickets(FieldMapping(id_field="id", text_field="body")))
        assert_that(out["tickets"] | beam.Map(lambda t: (t.id, t.subject, t.body, t.line)),
                    equal_to([("a", "S", "hello", 1)]), label="tickets")
        assert_that(out["dead_letter"] | beam.Map(lambda d: (d.id, d.stage, d.reason, d.line)),
                    equal_to([("b", "parse", "empty_text", 2), (None, "parse", "invalid_json", 3),
                              ("a", "parse", "duplicate_id", 4),
                              (None, "parse", "missing_id", 5)]), label="dead_letters")


def test_validate_with_custom_field_names():
    records = [_raw({"ticket_no": 5, "text": "custom", "title": "T"}, 1)]
    mapping = FieldMapping(id_field="ticket_no", text_field="text", subject_field="title")
    with TestPipeline() as p:
        out = p | beam.Create(records) | ValidateTickets(mapping)
        assert_that(out["tickets"] | beam.Map(lambda t: (t.id, t.subject, t.body,
                                                         t.fields["ticket_no"])),
                    equal_to([("5", "T", "custom", 5)]), label="tickets")
        assert_that(out["dead_letter"], equal_to([]), label="no_dead_letters")


def _ticket(i, body=None):
    return Ticket(id=f"t{i}", subject=f"subject {i}", body=body or f"body {i}",
                  fields={"id": f"t{i}", "body": body or f"body {i}"})


def test_call_model_outputs_results_and_dead_letters(simulator_factory):
    sim = simulator_factory()
    config = LlmConfig(base_url=sim.base_url, public_api_key="test", max_concurrency=4,
                       retry=RetryPolicy(max_retries=1, initial_backoff_secs=0.01))
    batches = [("k1", [_ticket(1), _ticket(2, "FAIL_N_TIMES:5")]),
               ("k2", [_ticket(3), _ticket(4, "CONTENT_FILTER")])]
    with TestPipeline() as p:
        out = p | beam.Create(batches) | CallModel(config)
        assert_that(out["results"] | beam.Map(lambda r: (r.id, r.stats.attempts,
                                                          bool(r.response))),
                    equal_to([("t1", 1, True), ("t3", 1, True)]), label="results")
        assert_that(out["dead_letter"] | beam.Map(lambda d: (d.id, d.reason, d.stats.attempts)),
                    equal_to([("t2", "retries_exhausted", 2), ("t4", "content_filter", 1)]),
                    label="dead_letters")
    assert sim.stats()["requests"] == 1 + 2 + 1 + 1


def test_batching_groups_by_key_field():
    tickets = [Ticket(id=f"t{i}", subject="", body="b", fields={"priority": p})
               for i, p in enumerate(["high", "low", "high", "high", "low"])]
    config = BatchConfig(batch_size=2, key_field="priority")
    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create(tickets) | BatchTickets(config)
        sizes = batches | beam.Map(lambda kv: (kv[0].key, len(kv[1])))
        assert_that(sizes | beam.combiners.Count.PerKey(),
                    equal_to([("priority=high", 2), ("priority=low", 1)]), label="batches")
        assert_that(batches | beam.FlatMap(lambda kv: [t.id for t in kv[1]]),
                    equal_to([f"t{i}" for i in range(5)]), label="every_ticket_once")


def test_keys_are_stable():
    ticket = Ticket(id="T-1", subject="", body="b", fields={})
    # Pinned: the shard of an id must not change between processes, runs and releases.
    assert stable_shard("T-1", 16) == 11 and stable_shard("T-000001", 16) == 10
    assert key_of(ticket, BatchConfig(num_shards=16)).startswith("shard-")
    assert key_of(ticket, BatchConfig(key_field="missing")) == "missing="


def test_read_tickets_reads_lines_with_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n')
    with TestPipeline(runner="FnApiRunner") as p:
        records = p | ReadTickets(str(tmp_path / "*.jsonl"))
        assert_that(records | beam.Map(lambda r: (r.line, r.value)),
                    equal_to([(1, '{"id": 1}'), (3, '{"id": 2}')]))


def test_json_safe_converts_parquet_values():
    import datetime
    import decimal
    value = {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "price": decimal.Decimal("1.5"),
             "blob": b"\xff", "nan": float("nan"), "nested": [(1, 2)]}
    assert json.loads(json.dumps(json_safe(value))) == {
        "when": "2026-01-02T03:04:05", "price": "1.5", "blob": "/w==", "nan": None,
        "nested": [[1, 2]]}


def test_call_model_with_a_fake_caller():
    from tests import llm_fakes

    config = LlmConfig(base_url="http://fake-1/v1", public_api_key="k", max_concurrency=2,
                       retry=RetryPolicy(max_retries=1, initial_backoff_secs=0.001))
    batches = [("k1", [_ticket(1), _ticket(2, "FAIL_ALWAYS")]),
               ("k2", [_ticket(3), _ticket(4, "CONTENT_FILTER")])]
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(batches) | CallModel(config,
                                                   caller_factory=llm_fakes.fake_factory)
        # The fake answers with the user message reversed.
        assert_that(out["results"] | beam.Map(lambda r: (
            r.id, r.response[::-1].startswith(f"Ticket ID: {r.id}\n"), r.stats.attempts)),
                    equal_to([("t1", True, 1), ("t3", True, 1)]), label="results")
        assert_that(out["dead_letter"] | beam.Map(lambda d: (d.id, d.reason, d.stats.attempts)),
                    equal_to([("t2", "retries_exhausted", 2), ("t4", "content_filter", 1)]),
                    label="dead_letters")


def test_two_call_model_steps_with_different_prompts_share_one_engine():
    from tests import llm_fakes

    base = LlmConfig(base_url="http://fake-2/v1", public_api_key="k", max_concurrency=2)
    other = dataclasses.replace(base, system_prompt="Answer in French.")
    before = len(llm_fakes.CREATED)
    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create([("k", [_ticket(1), _ticket(2)])])
        first = batches | "First" >> CallModel(base, caller_factory=llm_fakes.fake_factory)
        second = batches | "Second" >> CallModel(other, caller_factory=llm_fakes.fake_factory)
        assert_that(first["results"] | beam.Map(lambda r: r.id), equal_to(["t1", "t2"]),
                    label="first")
        assert_that(second["results"] | beam.Map(lambda r: r.id), equal_to(["t1", "t2"]),
                    label="second")
    made = llm_fakes.CREATED[before:]
    # One engine (one client, one limiter) in this process for both steps: they share a quota.
    assert len(made) == 1
    systems = {call["messages"][0]["content"] for call in made[0].calls}
    assert systems == {base.system_prompt, "Answer in French."}


def test_write_results_and_dead_letters(tmp_path):
    from transforms.records import CallStats, DeadLetter, Result
    from transforms.sinks import WriteDeadLetters, WriteResults

    results = [Result(id=f"r{i}", response="ok", model="m", finish_reason="stop",
                      started_at=1.7e9, finished_at=1.7e9 + 1, ticket={"id": f"r{i}"},
                      stats=CallStats(attempts=1, prompt_tokens=3, completion_tokens=4))
               for i in range(3)]
    dead = [DeadLetter(id="d1", stage="llm", reason="content_filter", error_class="X",
                       message="no", ticket={"id": "d1"}, stats=CallStats(attempts=1))]
    with TestPipeline(runner="FnApiRunner") as p:
        _ = p | "R" >> beam.Create(results) | WriteResults(str(tmp_path), "jsonl",
                                                           basename="results-x")
        _ = p | "D" >> beam.Create(dead) | WriteDeadLetters(str(tmp_path), basename="dead_letter-x")
    written = [json.loads(line) for path in sorted(tmp_path.glob("results-x-*.jsonl"))
               for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in written) == ["r0", "r1", "r2"]
    assert written[0]["prompt_tokens"] == 3 and written[0]["attempts"] == 1
    (dead_file,) = tmp_path.glob("dead_letter-x-*.jsonl")
    letter = json.loads(dead_file.read_text())
    assert (letter["id"], letter["reason"], letter["attempts"]) == ("d1", "content_filter", 1)


def test_read_done_ids_reads_jsonl_and_parquet_results(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.resume import ReadDoneIds

    (tmp_path / "results-a-00000-of-00001.jsonl").write_text(
        '{"id": "a1"}\n{"id": 7}\nnot json\n')
    pq.write_table(pa.table({"id": ["p1", "p2"]}),
                   str(tmp_path / "results-b-00000-of-00001.parquet"))
    (tmp_path / "dead_letter-a-00000-of-00001.jsonl").write_text('{"id": "no"}\n')
    with TestPipeline(runner="FnApiRunner") as p:
        ids = p | ReadDoneIds(str(tmp_path))
        assert_that(ids, equal_to(["a1", "7", "p1", "p2"]))
    with TestPipeline(runner="FnApiRunner") as p:
        assert_that(p | ReadDoneIds(str(tmp_path / "empty")), equal_to([]), label="none")


def test_pack_batch_requests_writes_one_line_per_distinct_request(tmp_path):
    from transforms.llm.batch import custom_id
    from transforms.llm.batch_io import PackBatchRequests

    config = LlmConfig(base_url="http://fake-3/v1", public_api_key="k")
    # A template without the id makes tickets 1 and 2 (same body) one request.
    same = dataclasses.replace(config, prompt_template="{% block user %}{{ body }}{% endblock %}")
    tickets = [_ticket(1, "same body"), _ticket(2, "same body"), _ticket(3, "other")]
    with TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(tickets) | PackBatchRequests(same, str(tmp_path / "req"))
    lines = [json.loads(line) for path in sorted(tmp_path.glob("req-*.jsonl"))
             for line in path.read_text().splitlines()]
    assert len(lines) == 2 and {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert {line["custom_id"] for line in lines} == {custom_id(line["body"]) for line in lines}
    assert sorted(line["body"]["messages"][-1]["content"] for line in lines) == [
        "other", "same body"]


def test_attach_batch_outcomes_hands_each_ticket_its_outcome(tmp_path):
    from transforms.llm.answer import TicketAnswerer
    from transforms.llm.batch import custom_id
    from transforms.llm.batch_io import AttachBatchOutcomes

    config = LlmConfig(base_url="http://fake-4/v1", public_api_key="k")
    answerer = TicketAnswerer(config, flow=None)
    answered, online = _ticket(1), _ticket(2)
    cid = custom_id(answerer.request(answered).params)
    (tmp_path / "outcomes-0.jsonl").write_text(json.dumps(
        {"custom_id": cid, "round": 1, "status": 200, "completion": {"content": "hi"}}) + "\n")
    with TestPipeline(runner="FnApiRunner") as p:
        out = (p | beam.Create([answered, online])
               | AttachBatchOutcomes(config, str(tmp_path / "outcomes-*")))
        assert_that(out | beam.Map(lambda t: (t.id, t.batch_outcome is not None and
                                              json.loads(t.batch_outcome)["custom_id"] == cid)),
                    equal_to([("t1", True), ("t2", False)]))
