"""Transforms under TestPipeline, asserting on both the main and the dead-letter outputs."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.batch import BatchConfig, BatchTickets, key_of, stable_shard
from transforms.llm import CallModel, LlmConfig, render_messages
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
        assert_that(out["results"] | beam.Map(lambda r: (r.id, r.attempts, bool(r.response))),
                    equal_to([("t1", 1, True), ("t3", 1, True)]), label="results")
        assert_that(out["dead_letter"] | beam.Map(lambda d: (d.id, d.reason, d.attempts)),
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
    assert stable_shard("T-1", 16) == stable_shard("T-1", 16)
    assert key_of(ticket, BatchConfig(num_shards=16)).startswith("shard-")
    assert key_of(ticket, BatchConfig(key_field="missing")) == "missing="


def test_read_tickets_reads_lines_with_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n')
    with TestPipeline(runner="FnApiRunner") as p:
        records = p | ReadTickets(str(tmp_path / "*.jsonl"))
        assert_that(records | beam.Map(lambda r: (r.line, r.value)),
                    equal_to([(1, '{"id": 1}'), (3, '{"id": 2}')]))


def test_render_messages_quotes_id_and_subject():
    messages = render_messages(_ticket(7), "be nice")
    assert messages[0] == {"role": "system", "content": "be nice"}
    assert messages[1]["content"].startswith("Ticket ID: t7\nSubject: subject 7\n\n")


def test_json_safe_converts_parquet_values():
    import datetime
    import decimal
    value = {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "price": decimal.Decimal("1.5"),
             "blob": b"\xff", "nan": float("nan"), "nested": [(1, 2)]}
    assert json.loads(json.dumps(json_safe(value))) == {
        "when": "2026-01-02T03:04:05", "price": "1.5", "blob": "/w==", "nan": None,
        "nested": [[1, 2]]}
