"""Tests of the simulator's Batch API, through the real ``openai`` client.

Servers come from ``simulator.start`` (port 0) with a fake monotonic clock, so batches move
through their lifecycle when the test advances time, never by sleeping. A few checks of the pure
layers (input parsing, the store's schedule) use the same fake clock without HTTP.
"""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from simulator import SimulatorConfig, SimulatorHandle, config_from_argv
from simulator.batch import BatchStore
from simulator.batch_input import MAX_LINES, line_tokens, parse_input
from simulator.stats import Stats
from simulator.tokens import prompt_tokens

ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
FINAL = ("completed", "failed", "expired", "cancelled")
SCHEMA = {"type": "object",
          "properties": {"ticket_id": {"type": "string"},
                         "category": {"type": "string", "enum": ["account", "billing"]},
                         "priority": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["ticket_id", "category", "priority"], "additionalProperties": False}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def body(n: int, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    content = f"Ticket ID: T-{n:06d}\nSubject: Cannot log in ({n})\n\nHelp with request {n}."
    return {"model": model, "messages": [{"role": "system", "content": "You are support."},
                                         {"role": "user", "content": content}], **extra}


def line(custom_id: str, request: dict[str, Any], url: str = ENDPOINT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": request}


def lines_for(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [line(f"c{i}", body(i, **extra)) for i in range(count)]


def jsonl(records: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def client_for(sim: SimulatorHandle, api_key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=api_key, max_retries=0, timeout=10)


def submit(client: openai.OpenAI, records: list[Any], **kwargs: Any) -> Any:
    upload = client.files.create(file=("requests.jsonl", io.BytesIO(jsonl(records))),
                                 purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                 completion_window="24h", **kwargs)


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def raw(sim: SimulatorHandle, method: str, path: str,
        payload: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        data = None if payload is None else json.dumps(payload).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(simulator_factory: Callable[..., SimulatorHandle],
         clock: FakeClock) -> Callable[..., SimulatorHandle]:
    """Starts a simulator on the fake clock (batch_secs=10 unless overridden)."""
    def start(**flags: Any) -> SimulatorHandle:
        return simulator_factory(**{"batch_secs": 10.0, "clock": clock, **flags})
    return start


# ---- through the client ------------------------------------------------------------------------


def test_lifecycle_to_completed_with_the_online_answers(make: Callable[..., SimulatorHandle],
                                                        clock: FakeClock) -> None:
    sim = make()
    client = client_for(sim)
    records = lines_for(10) + [
        line("schema", body(10, response_format={"type": "json_schema", "json_schema": {
            "name": "triage", "schema": SCHEMA, "strict": True}})),
        line("short", body(11, max_tokens=5)),
    ]
    batch = submit(client, records, metadata={"run": "r1", "shard": "3"})
    assert (batch.status, batch.request_counts.total) == ("validating", 0)
    assert batch.metadata == {"run": "r1", "shard": "3"} and batch.model == MODEL
    seen = [batch]
    for step in (0.5, 0.6, 4.0, 4.0, 0.5, 0.5):  # t = 0.5, 1.1, 5.1, 9.1, 9.6, 10.1
        clock.advance(step)
        seen.append(client.batches.retrieve(batch.id))
    assert [b.status for b in seen] == ["validating", "validating", "in_progress", "in_progress",
                                        "finalizing", "finalizing", "completed"]
    progress = [b.request_counts.completed for b in seen]
    assert progress == sorted(progress) and 0 < progress[3] < 12 and progress[-1] == 12
    done = seen[-1]
    assert done.request_counts.total == 12 and done.request_counts.failed == 0
    assert done.error_file_id is None and done.output_file_id is not None
    assert done.in_progress_at - done.created_at == 1
    assert done.finalizing_at - done.created_at == 9 and done.completed_at - done.created_at == 10
    assert done.expires_at - done.created_at == 86_400 and done.metadata == {"run": "r1",
                                                                             "shard": "3"}

    output = read_jsonl(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(r["custom_id"] for r in records)
    assert [o["custom_id"] for o in output] != [r["custom_id"] for r in records]  # shuffled
    assert done.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"]
                                          for o in output)
    by_id = {o["custom_id"]: o for o in output}
    for record in records:
        out = by_id[record["custom_id"]]
        assert out["error"] is None and out["id"].startswith("batch_req_")
        assert out["response"]["status_code"] == 200 and out["response"]["request_id"]
        status, online = raw(sim, "POST", ENDPOINT, record["body"])
        assert status == 200
        batch_body = out["response"]["body"]
        for key in ("id", "created"):
            batch_body.pop(key), online.pop(key)
        assert json.dumps(batch_body, sort_keys=True) == json.dumps(online, sort_keys=True)
    assert json.loads(by_id["schema"]["response"]["body"]["choices"][0]["message"]["content"]
                      ).keys() == SCHEMA["properties"].keys()
    assert by_id["short"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    file_meta = client.files.retrieve(done.output_file_id)
    assert file_meta.purpose == "batch_output" and file_meta.bytes == len(
        client.files.content(done.output_file_id).content)


def test_zero_batch_secs_completes_by_the_next_poll(make: Callable[..., SimulatorHandle]) -> None:
    client = client_for(make(batch_secs=0))
    batch = submit(client, lines_for(3))
    assert batch.status == "validating"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3


def test_same_seed_same_order_and_content(make: Callable[..., SimulatorHandle]) -> None:
    outputs = []
    for _ in range(2):
        client = client_for(make(batch_secs=0, seed=7))
        batch = client.batches.retrieve(submit(client, lines_for(8)).id)
        outputs.append([(o["custom_id"], o["response"]["body"]["choices"])
                        for o in read_jsonl(client, batch.output_file_id)])
    assert outputs[0] == outputs[1]


def test_list_is_newest_first_with_cursor_pages(make: Callable[..., SimulatorHandle],
                                                clock: FakeClock) -> None:
    sim = make()
    client = client_for(sim)
    created = []
    for i in range(5):
        created.append(submit(client, lines_for(1), metadata={"i": str(i)}).id)
        clock.advance(1)
    newest_first = created[::-1]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    assert [b.id for b in client.batches.list(limit=2, after=newest_first[1]).data] == \
        newest_first[2:4]
    assert [b.id for b in client.batches.list(limit=2)] == newest_first  # auto-pagination
    status, page = raw(sim, "GET", f"/v1/batches?limit=3&after={newest_first[2]}")
    assert status == 200 and page["object"] == "list" and page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (newest_first[3], newest_first[4])
    assert [b["metadata"]["i"] for b in page["data"]] == ["1", "0"]
    assert raw(sim, "GET", "/v1/batches?after=batch_nope")[0] == 400
    assert raw(sim, "GET", "/v1/batches?limit=101")[0] == 400


def test_cancel_keeps_the_lines_already_done(make: Callable[..., SimulatorHandle],
                                             clock: FakeClock) -> None:
    sim = make()
    client = client_for(sim)
    batch = submit(client, lines_for(10))
    clock.advance(5.0)  # in progress, 10 * (4 / 8) = 5 lines done
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.request_counts.completed == 5
    assert client.batches.cancel(batch.id).status == "cancelling"  # idempotent
    clock.advance(0.5)
    assert client.batches.retrieve(batch.id).status == "cancelling"
    clock.advance(0.6)
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at - done.cancelling_at == 1
    assert done.request_counts.completed == 5 and done.completed_at is None
    output = read_jsonl(client, done.output_file_id)
    errors = read_jsonl(client, done.error_file_id)
    assert len(output) == 5 and len(errors) == 5
    assert {o["custom_id"] for o in output} | {e["custom_id"] for e in errors} == \
        {f"c{i}" for i in range(10)}
    assert all(e["response"] is None and e["error"]["code"] == "batch_cancelled" for e in errors)
    clock.advance(100)
    assert client.batches.retrieve(batch.id).status == "cancelled"
    finished = submit(client, lines_for(1))
    clock.advance(10)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(finished.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_unknown")
    assert sim.stats()["batches_cancelled"] == 1


def test_expires_part_way(make: Callable[..., SimulatorHandle], clock: FakeClock) -> None:
    client = client_for(make(batch_expire_fraction=0.3))
    batch = submit(client, lines_for(10))
    clock.advance(9.5)
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress" and running.request_counts.completed == 7
    clock.advance(0.5)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired" and expired.expired_at - expired.created_at == 10
    assert expired.expires_at == expired.expired_at and expired.completed_at is None
    counts = expired.request_counts
    assert (counts.total, counts.completed, counts.failed) == (10, 7, 0)
    output = read_jsonl(client, expired.output_file_id)
    errors = read_jsonl(client, expired.error_file_id)
    assert len(output) == 7 and len(errors) == 3
    assert not {o["custom_id"] for o in output} & {e["custom_id"] for e in errors}
    for error in errors:
        assert error["response"] is None and error["error"]["code"] == "batch_expired"
        assert error["error"]["message"] and error["id"].startswith("batch_req_")


def test_line_failures_go_to_the_error_file(make: Callable[..., SimulatorHandle],
                                            clock: FakeClock) -> None:
    sim = make(batch_p_line_fail=0.2, context_window=200)
    client = client_for(sim)
    records = lines_for(10) + [
        line("filtered", body(20, messages=[{"role": "user", "content": "CONTENT_FILTER x"}])),
        line("too-long", body(21, messages=[{"role": "user", "content": "x" * 2000}])),
        line("bad-body", {"model": MODEL, "messages": "not a list"}),
        line("flaky", body(22, messages=[{"role": "user", "content": "FAIL_N_TIMES:1 flaky"}])),
    ]
    batch = submit(client, records)
    clock.advance(10)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    errors = {e["custom_id"]: e for e in read_jsonl(client, done.error_file_id)}
    output = read_jsonl(client, done.output_file_id)
    assert len(errors) + len(output) == 14 and len(errors) == done.request_counts.failed
    codes = {cid: (e["response"]["status_code"], e["response"]["body"]["error"]["code"])
             for cid, e in errors.items()}
    assert codes.pop("filtered") == (400, "content_filter")
    assert codes.pop("too-long") == (400, "context_length_exceeded")
    assert codes.pop("bad-body") == (400, "invalid_type")
    assert codes.pop("flaky") == (503, None)  # seed 0 does not pick it for a 500
    assert list(codes.values()) == [(500, None)] * round(0.2 * 14)  # --batch_p_line_fail
    assert all(e["error"] is None for e in errors.values())
    assert all(o["response"]["status_code"] == 200 for o in output)
    # The marker's attempt count is shared: the online retry is the second attempt.
    second = client.chat.completions.create(**records[-1]["body"])
    assert second.choices[0].finish_reason == "stop"
    assert sim.stats()["requests"] == 1  # batch lines are not online requests


@pytest.mark.parametrize(("records", "code", "line_no"), [
    (["{not json"], "invalid_json_line", 1),
    ([line("a", body(1)), line("a", body(2))], "duplicate_custom_id", 2),
    ([line("a", body(1)), line("b", body(2), url="/v1/embeddings")], "invalid_url", 2),
    ([line("a", body(1)), line("b", body(2, model="gpt-4o"))], "mismatched_model", 2),
    ([{"custom_id": "a", "method": "GET", "url": ENDPOINT, "body": body(1)}], "invalid_method",
     1),
    ([{"custom_id": "a", "method": "POST", "url": ENDPOINT, "body": {"messages": []}}],
     "missing_required_parameter", 1),
    (["", "  "], "empty_file", None),
])
def test_validation_failures(make: Callable[..., SimulatorHandle], clock: FakeClock,
                             records: list[Any], code: str, line_no: int | None) -> None:
    client = client_for(make())
    batch = submit(client, records)
    assert batch.status == "validating"
    clock.advance(1)
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at - failed.created_at == 1
    assert failed.errors.object == "list" and failed.errors.data[0].code == code
    assert failed.errors.data[0].line == line_no and failed.errors.data[0].message
    assert failed.request_counts.total == 0 and failed.in_progress_at is None
    clock.advance(100)
    again = client.batches.retrieve(batch.id)
    assert again.status == "failed" and again.output_file_id is None
    assert again.error_file_id is None


def test_fail_validation_flag_and_line_limit(make: Callable[..., SimulatorHandle],
                                             clock: FakeClock) -> None:
    client = client_for(make(batch_fail_validation=True))
    batch = submit(client, lines_for(2))
    clock.advance(1)
    assert client.batches.retrieve(batch.id).errors.data[0].code == \
        "simulated_validation_failure"
    client = client_for(make())
    too_many = submit(client, ['{"custom_id": 1}'] * (MAX_LINES + 1))
    clock.advance(1)
    failed = client.batches.retrieve(too_many.id)
    assert failed.status == "failed" and failed.errors.data[0].code == "too_many_lines"


def test_enqueued_token_limit(make: Callable[..., SimulatorHandle], clock: FakeClock) -> None:
    records = lines_for(4, max_tokens=100)
    tokens = sum(prompt_tokens(r["body"]["messages"]) + 100 for r in records)
    sim = make(batch_max_enqueued_tokens=tokens + 10)
    client = client_for(sim)
    first = submit(client, records)
    second = submit(client, records)  # the first is still validating: over the limit
    other_model = submit(client, lines_for(4, max_tokens=100, model="gpt-4o"))
    clock.advance(1)
    assert client.batches.retrieve(first.id).status == "in_progress"
    refused = client.batches.retrieve(second.id)
    assert refused.status == "failed" and refused.errors.data[0].code == "token_limit_exceeded"
    assert "Enqueued token limit" in refused.errors.data[0].message
    assert client.batches.retrieve(other_model.id).status == "in_progress"
    clock.advance(9)  # the first completes: its tokens are no longer enqueued
    assert client.batches.retrieve(first.id).status == "completed"
    third = submit(client, records)
    clock.advance(1)
    assert client.batches.retrieve(third.id).status == "in_progress"
    alone_too_big = submit(client, lines_for(5, max_tokens=100, model="gpt-4.1"))
    clock.advance(1)
    assert client.batches.retrieve(alone_too_big.id).errors.data[0].code == \
        "token_limit_exceeded"


def test_stats_reset_and_files_api(make: Callable[..., SimulatorHandle],
                                   clock: FakeClock) -> None:
    sim = make()
    client = client_for(sim)
    data = jsonl(lines_for(3))
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    assert (upload.purpose, upload.bytes, upload.filename) == ("batch", len(data), "in.jsonl")
    assert client.files.retrieve(upload.id).id == upload.id
    assert client.files.content(upload.id).content == data
    assert [f.id for f in client.files.list(purpose="batch")] == [upload.id]
    for name, purpose in (("in.txt", "batch"), ("in.jsonl", "nonsense")):
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=(name, io.BytesIO(data)), purpose=purpose)
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-nope", endpoint=ENDPOINT,
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                              completion_window="24h", metadata={"k": "v" * 513})
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    submit(client, ["{broken"])
    stats = sim.stats()
    assert (stats["files_uploaded"], stats["batches_created"], stats["batch_requests"]) == \
        (2, 2, 4)
    assert stats["batches_cancelled"] == 0 and stats["requests"] == 0
    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)
    clock.advance(10)
    assert client.batches.retrieve(batch.id).status == "completed"  # read before the delete
    status, body = raw(sim, "POST", "/reset")
    assert status == 200 and body == {"ok": True}
    stats = sim.stats()
    assert (stats["files_uploaded"], stats["batches_created"], stats["batch_requests"]) == \
        (0, 0, 0)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)
    assert client.batches.list().data == []


def test_api_key_guards_the_batch_endpoints(make: Callable[..., SimulatorHandle]) -> None:
    sim = make(api_key="sekrit")
    with pytest.raises(openai.AuthenticationError):
        client_for(sim, api_key="wrong").batches.list()
    with pytest.raises(openai.AuthenticationError):
        submit(client_for(sim, api_key="wrong"), lines_for(1))
    assert client_for(sim, api_key="sekrit").batches.list().data == []


# ---- pure layers -------------------------------------------------------------------------------


def test_parse_input_and_token_estimate() -> None:
    good = parse_input(jsonl(lines_for(3, max_tokens=50)) + b"\n\n", ENDPOINT, 256)
    assert good.errors == () and good.count == 3 and good.model == MODEL
    assert [x.number for x in good.lines] == [1, 2, 3]
    assert good.tokens == sum(prompt_tokens(r["body"]["messages"]) + 50
                              for r in lines_for(3))
    assert line_tokens({"messages": [{"role": "user", "content": "abcd"}]}, 256) == 1 + 6 + 256
    assert line_tokens({"messages": [], "max_tokens": 9, "max_completion_tokens": 7}, 1) == 3 + 7
    bad = parse_input(jsonl(["[1]"] * 20), ENDPOINT, 256)
    assert len(bad.errors) == 10 and bad.count == 20  # capped at MAX_ERRORS
    assert parse_input(b"\xff\xfe", ENDPOINT, 256).errors[0]["code"] == "invalid_file_encoding"
    # A U+2028 inside a JSON string is not a line break.
    assert parse_input(jsonl([line("a", body(1, user="x\u2028y"))]), ENDPOINT, 1).errors == ()


def test_store_schedule_without_http(clock: FakeClock) -> None:
    answered: list[int] = []

    def answer(request: dict[str, Any], created: int) -> tuple[int, dict[str, Any]]:
        answered.append(created)
        return 200, {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}

    stats = Stats(clock)
    store = BatchStore(SimulatorConfig(batch_secs=10.0), answer, stats, clock,
                       wall_clock=lambda: 5000.0)
    upload = store.files.upload(jsonl(lines_for(8)), "a.jsonl", "batch")
    batch = store.create({"input_file_id": upload["id"], "endpoint": ENDPOINT,
                          "completion_window": "24h"})
    timeline = []
    for _ in range(11):
        view = store.retrieve(batch["id"])
        timeline.append((view["status"], view["request_counts"]["completed"]))
        clock.advance(1)
    assert timeline == [("validating", 0), ("in_progress", 0), ("in_progress", 1),
                        ("in_progress", 2), ("in_progress", 3), ("in_progress", 4),
                        ("in_progress", 5), ("in_progress", 6), ("in_progress", 7),
                        ("finalizing", 8), ("completed", 8)]
    # Lines are answered lazily, each once, stamped with its own finishing time.
    assert answered == sorted(answered) and len(answered) == 8 and answered[-1] == 5009
    assert store.retrieve(batch["id"])["usage"]["total_tokens"] == 24
    assert stats.batch_requests == 8 and stats.batches_created == 1


def test_config_flags_and_ranges() -> None:
    config = config_from_argv(["--batch_secs", "0", "--batch_p_line_fail", "0.5",
                               "--batch_expire_fraction", "0.25", "--batch_fail_validation",
                               "--batch_max_enqueued_tokens", "9000"])
    assert (config.batch_secs, config.batch_p_line_fail, config.batch_expire_fraction,
            config.batch_fail_validation, config.batch_max_enqueued_tokens) == \
        (0.0, 0.5, 0.25, True, 9000)
    for bad in ({"batch_p_line_fail": 1.5}, {"batch_expire_fraction": -0.1},
                {"batch_secs": -1}, {"batch_max_enqueued_tokens": -1}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)


def test_a_cancel_lasts_a_tenth_of_batch_secs_but_at_most_ten_minutes(clock: FakeClock) -> None:
    def answer(request: dict[str, Any], created: int) -> tuple[int, dict[str, Any]]:
        return 200, {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}

    for secs, lasts in ((100_000.0, 600.0), (100.0, 10.0)):
        store = BatchStore(SimulatorConfig(batch_secs=secs), answer, Stats(clock), clock)
        upload = store.files.upload(jsonl(lines_for(3)), "a.jsonl", "batch")
        batch = store.create({"input_file_id": upload["id"], "endpoint": ENDPOINT,
                              "completion_window": "24h"})
        assert store.cancel(batch["id"])["status"] == "cancelling"
        clock.advance(lasts - 0.5)
        assert store.retrieve(batch["id"])["status"] == "cancelling"
        clock.advance(0.5)
        done = store.retrieve(batch["id"])
        assert done["status"] == "cancelled"
        assert done["cancelled_at"] - done["cancelling_at"] == lasts
