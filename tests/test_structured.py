"""Structured output: schema loading, validation, repair, Parquet columns, end to end."""

from __future__ import annotations

import glob
import json

import jsonschema
import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLES, write_jsonl
from transforms import structured
from transforms.sinks import RESULT_SCHEMA

TRIAGE_SCHEMA = EXAMPLES / "triage_schema.json"
TRIAGE_TEMPLATE = EXAMPLES / "triage_template.j2"
FAST_RETRIES = ("--initial_backoff_secs", "0.01", "--max_backoff_secs", "0.05")

# One property of every kind the Parquet mapping knows.
ALL_KINDS_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "count": {"type": "integer", "minimum": 0, "maximum": 10},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "urgent": {"type": "boolean"},
        "mood": {"enum": ["happy", "sad"]},
        "tier": {"type": "string", "enum": ["gold", "silver"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 2},
        "contact": {"type": "object", "properties": {"name": {"type": "string"},
                                                      "age": {"type": "integer"}},
                    "required": ["name", "age"], "additionalProperties": False},
        "maybe": {"type": ["string", "null"]},
        "model": {"type": "string"},
    },
    "required": ["label", "count", "score", "urgent", "mood", "tier", "tags", "scores", "contact",
                 "maybe", "model"],
    "additionalProperties": False,
}

EXPECTED_ARROW = {
    "label": pa.string(), "count": pa.int64(), "score": pa.float64(), "urgent": pa.bool_(),
    "mood": pa.string(), "tier": pa.string(), "tags": pa.list_(pa.string()),
    "scores": pa.string(), "contact": pa.string(), "maybe": pa.string(),
    "output_model": pa.string(),  # "model" is a result column already
}


# --------------------------------------------------------------------------- loading


def test_example_schema_loads():
    loaded = structured.load_schema(str(TRIAGE_SCHEMA))
    assert loaded.name == "ticket_triage" and loaded.strict is True
    schema = loaded.schema
    assert list(schema["properties"]) == ["reply", "category", "priority", "sentiment",
                                          "language", "needs_human", "summary"]
    assert schema["properties"]["needs_human"]["type"] == "boolean"
    assert "enum" in schema["properties"]["category"]
    assert "enum" in schema["properties"]["priority"]
    fmt = loaded.response_format()
    assert fmt == {"type": "json_schema",
                   "json_schema": {"name": "ticket_triage", "schema": schema, "strict": True}}


def test_schema_name_falls_back_to_a_safe_file_name():
    text = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    assert structured.parse_schema(text, "/x/my triage.v2.json").name == "my_triage_v2"


@pytest.mark.parametrize("text,needle", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "objekt", "properties": {}}', "not a valid JSON Schema"),
    ('{"type": "object", "properties": {"a": {"type": 5}}}', "not a valid JSON Schema"),
    ('{"type": "array", "items": {"type": "string"}}', "root must be"),
    ('{"type": "object"}', "root must be"),
])
def test_bad_schemas_are_refused(text, needle):
    with pytest.raises(structured.SchemaLoadError) as caught:
        structured.parse_schema(text, "s.json")
    assert needle in str(caught.value)


def test_unreadable_schema_file(tmp_path):
    with pytest.raises(structured.SchemaLoadError, match="cannot read"):
        structured.load_schema(str(tmp_path / "missing.json"))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(structured.SchemaLoadError, match="cannot read"):
        structured.load_schema(str(binary))


def test_schema_overhead_tokens():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    text_len = len(json.dumps(schema))
    assert structured.schema_overhead_tokens(schema) == -(-text_len // 4)
    assert structured.schema_overhead_tokens(json.loads(TRIAGE_SCHEMA.read_text())) > 100


# --------------------------------------------------------------------------- validation


def test_validator_accepts_valid_and_explains_invalid():
    validator = structured.OutputValidator(json.loads(TRIAGE_SCHEMA.read_text()))
    good = {"reply": "Hi", "category": "billing", "priority": "low", "sentiment": "neutral",
            "language": "en", "needs_human": False, "summary": "Billing question."}
    assert validator.check(json.dumps(good)) == (good, None)
    value, problem = validator.check(json.dumps(good)[:40])
    assert value is None and "not valid JSON" in problem
    value, problem = validator.check('["invalid"]')
    assert value is None and "not of type 'object'" in problem
    value, problem = validator.check(json.dumps({**good, "priority": "whenever"}))
    assert value is None and "priority" in problem and "whenever" in problem
    value, problem = validator.check(json.dumps({k: v for k, v in good.items() if k != "reply"}))
    assert "'reply' is a required property" in problem
    value, problem = validator.check(json.dumps({**good, "extra": "x" * 2000}))
    assert value is None and len(problem) <= structured.MAX_ERROR_CHARS + 3


def test_repair_messages_append_answer_and_error():
    original = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    repair = structured.repair_messages(original, '["invalid"]', "wrong type")
    assert repair[:2] == original and len(original) == 2
    assert repair[2] == {"role": "assistant", "content": '["invalid"]'}
    assert repair[3]["role"] == "user" and "wrong type" in repair[3]["content"]
    assert "JSON only" in repair[3]["content"]


# --------------------------------------------------------------------------- Parquet mapping


def test_parquet_fields_are_typed_from_the_schema():
    fields = structured.parquet_fields(ALL_KINDS_SCHEMA, RESULT_SCHEMA.names)
    assert {f.name: f.type for f in fields} == EXPECTED_ARROW
    assert [f.name for f in fields][:3] == ["label", "count", "score"]  # the schema's order


def test_parquet_values_convert_to_the_column_types():
    output = {"label": "x", "count": 3, "score": 1, "urgent": True, "mood": "sad",
              "tier": "gold", "tags": ["a", "b"], "scores": [0.5], "maybe": None,
              "contact": {"name": "Ann", "age": 30}, "model": "m"}
    row = structured.parquet_values(ALL_KINDS_SCHEMA, output, RESULT_SCHEMA.names)
    assert row["score"] == 1.0 and isinstance(row["score"], float)
    assert row["tags"] == ["a", "b"] and row["urgent"] is True and row["maybe"] is None
    assert json.loads(row["contact"]) == {"name": "Ann", "age": 30}
    assert json.loads(row["scores"]) == [0.5]
    assert row["output_model"] == "m" and "model" not in row
    schema = pa.schema(structured.parquet_fields(ALL_KINDS_SCHEMA, RESULT_SCHEMA.names))
    table = pa.Table.from_pylist([row], schema=schema)  # the row really fits the types
    assert table.num_rows == 1
    empty = structured.parquet_values(ALL_KINDS_SCHEMA, None, RESULT_SCHEMA.names)
    assert set(empty.values()) == {None}


def test_parquet_column_clash_that_cannot_be_resolved():
    schema = {"type": "object", "properties": {"id": {"type": "string"},
                                               "output_id": {"type": "string"}}}
    with pytest.raises(structured.SchemaLoadError, match="rename"):
        structured.parquet_fields(schema, RESULT_SCHEMA.names)


# --------------------------------------------------------------------------- simulator marker


def test_invalid_output_marker_counts_per_conversation(simulator_factory):
    """A repair follow-up (answer + correction appended) is the conversation's next attempt."""
    sim = simulator_factory()
    schema = json.loads(TRIAGE_SCHEMA.read_text())
    fmt = structured.parse_schema(json.dumps(schema)).response_format()
    validator = structured.OutputValidator(schema)
    client = openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0)
    try:
        def ask(messages):
            reply = client.chat.completions.create(model="m", messages=messages,
                                                   response_format=fmt)
            return reply.choices[0].message.content

        for n, expected in ((1, [False, True]), (2, [False, False, True])):
            messages = [{"role": "user", "content": f"Ticket ID: T-{n}\nINVALID_OUTPUT_N_TIMES:{n}"}]
            seen = []
            for _ in expected:
                answer = ask(messages)
                _, problem = validator.check(answer)
                seen.append(problem is None)
                if problem:
                    messages = structured.repair_messages(messages, answer, problem)
            assert seen == expected
    finally:
        client.close()
    assert sim.stats()["faults"] == {"invalid_output": 3}


# --------------------------------------------------------------------------- end to end


def _check_outputs(results, schema):
    for result in results:
        jsonschema.validate(result["output"], schema)
        assert json.loads(result["response"]) == result["output"]


def test_triage_example_jsonl(run_pipeline):
    schema = json.loads(TRIAGE_SCHEMA.read_text())
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       "--prompt_template", str(TRIAGE_TEMPLATE),
                       "--response_schema", str(TRIAGE_SCHEMA))
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 300 and summary["ledger_balanced"] is True
    assert summary["requests"] == summary["simulator"]["requests"] == 300
    results = run.results()
    assert len(results) == 300
    _check_outputs(results, schema)
    assert {r["output"]["priority"] for r in results} <= {"low", "normal", "high", "urgent"}


def test_parquet_output_has_typed_columns(run_pipeline, tmp_path):
    schema_path = tmp_path / "kinds.json"
    schema_path.write_text(json.dumps(ALL_KINDS_SCHEMA))
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       "--output_format", "parquet", "--response_schema", str(schema_path))
    assert run.returncode == 0, run.stderr
    assert run.summary()["ledger_balanced"] is True
    paths = sorted(glob.glob(str(run.output / "results-*.parquet")))
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    assert table.num_rows == 300
    for name, arrow_type in EXPECTED_ARROW.items():
        assert table.schema.field(name).type == arrow_type, name
    for name in RESULT_SCHEMA.names:  # the usual columns are all still there, typed as before
        assert table.schema.field(name).type == RESULT_SCHEMA.field(name).type
    assert "output" not in table.schema.names
    for row in table.to_pylist()[:50]:
        response = json.loads(row["response"])  # the raw text is kept
        jsonschema.validate(response, ALL_KINDS_SCHEMA)
        assert row["label"] == response["label"] and row["count"] == response["count"]
        assert row["urgent"] == response["urgent"] and row["tags"] == response["tags"]
        assert json.loads(row["contact"]) == response["contact"]
        assert row["output_model"] == response["model"]
        assert row["model"] == "gpt-4o-mini"


def test_triage_example_parquet(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.parquet"), "--simulate",
                       "--output_format", "parquet", "--prompt_template", str(TRIAGE_TEMPLATE),
                       "--response_schema", str(TRIAGE_SCHEMA))
    assert run.returncode == 0, run.stderr
    paths = sorted(glob.glob(str(run.output / "results-*.parquet")))
    schema = pa.concat_tables([pq.read_table(p) for p in paths]).schema
    assert schema.field("needs_human").type == pa.bool_()
    for name in ("reply", "category", "priority", "sentiment", "language", "summary"):
        assert schema.field(name).type == pa.string()


def test_invalid_output_is_repaired_once_or_dead_lettered(run_pipeline, simulator_factory,
                                                          tmp_path):
    sim = simulator_factory()
    schema = json.loads(TRIAGE_SCHEMA.read_text())
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "T-ok", "subject": "fine", "body": "all good"},
        {"id": "T-repaired", "subject": "once", "body": "INVALID_OUTPUT_N_TIMES:1"},
        {"id": "T-twice", "subject": "twice", "body": "INVALID_OUTPUT_N_TIMES:2"},
        {"id": "T-flaky", "subject": "503 then invalid",
         "body": "FAIL_N_TIMES:1 INVALID_OUTPUT_N_TIMES:1"},
    ])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url,
                       "--response_schema", str(TRIAGE_SCHEMA), *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 4 and summary["succeeded"] == 3 and summary["dead_lettered"] == 1
    assert summary["ledger_balanced"] is True
    results = {r["id"]: r for r in run.results()}
    _check_outputs(results.values(), schema)
    assert results["T-ok"]["attempts"] == 1
    assert results["T-repaired"]["attempts"] == 2  # the original and one repair
    # FAIL_N_TIMES counts per exact request, so the repair request gets its own 503 first:
    # 503, invalid, 503, repaired; the repair has its own retries.
    assert results["T-flaky"]["attempts"] == 4
    dead = run.dead_letters_by_id()["T-twice"]
    assert dead["stage"] == "llm" and dead["reason"] == "invalid_output"
    assert dead["error_class"] == "InvalidOutput" and dead["attempts"] == 2
    assert dead["raw_output"] == '["invalid"]'  # the simulator's second invalid answer
    assert "not of type 'object'" in dead["message"]
    stats = sim.stats()
    assert stats["faults"] == {"invalid_output": 4, "fail_n_times": 2}
    assert summary["requests"] == stats["requests"] == 1 + 2 + 2 + 4
    assert summary["retries"] == 2
    # Every answer the provider billed is counted, the dead letter's included.
    assert summary["prompt_tokens"] == stats["prompt_tokens"]
    assert summary["completion_tokens"] == stats["completion_tokens"]


@pytest.mark.parametrize("content,flags,needle", [
    (None, (), "cannot read"),
    ("{nope", (), "not JSON"),
    ('{"type": "array", "items": {}}', (), "root must be"),
    (json.dumps({"type": "object", "properties": {"id": {"type": "string"},
                                                  "output_id": {"type": "string"}}}),
     ("--output_format", "parquet"), "rename"),
])
def test_bad_schema_file_fails_before_any_work(run_pipeline, tmp_path, content, flags, needle):
    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content)
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       "--response_schema", str(schema), *flags)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--response_schema" in lines[0] and needle in lines[0]
    assert "Traceback" not in run.stderr and not run.output.exists()
