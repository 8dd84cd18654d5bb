"""The Batch API's pure parts: request lines, outcome lines, the prefetched layer, the driver's
decisions, the journal, batch prices, --estimate. Small fakes, no HTTP, no Beam."""

from __future__ import annotations

import asyncio
import json

import pytest

from pipeline.batch import policy
from pipeline.batch.files import PartWriter, iter_lines
from pipeline.batch.journal import Journal, fold
from pipeline.estimate import EstimateInputs, estimate
from simulator.batch_input import line_tokens as simulator_line_tokens
from tests.llm_fakes import FakeLayer
from transforms import errors
from transforms.llm import batch, providers
from transforms.llm.providers import openai as wire
from transforms.llm.answer import TicketAnswerer
from transforms.llm.batch_io import _attach
from transforms.llm.config import LlmConfig
from transforms.pricing import Price, PricingError, load_pricing
from transforms.records import DeadLetter, Result, Ticket
from transforms.retry import RetryPolicy
from transforms.structured import StructuredOutput
from transforms.validate import FieldMapping

HALF, FULL = Price(0.075, 0.0375, 0.30), Price(0.15, 0.075, 0.60)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _config(**overrides):
    base = {"base_url": "http://fake/v1", "public_api_key": "k",
            "retry": RetryPolicy(max_retries=2, initial_backoff_secs=0, max_backoff_secs=0)}
    base.update(overrides)
    return LlmConfig(**base)


def _ticket(i=1, outcome=None):
    return Ticket(id=f"T-{i}", subject="s", body=f"body {i}", fields={"id": f"T-{i}"},
                  batch_outcome=outcome)


def _line(cid, status=200, content="hello", code=None, **extra):
    if status is None:
        return {"custom_id": cid, "response": None, "error": {"code": code, "message": "no"}}
    body = ({"model": "m", "choices": [{"message": {"content": content},
                                        "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1000, "completion_tokens": 500}} if status == 200
            else {"error": {"code": code, "message": f"failed {status}"}})
    return {"custom_id": cid, "response": {"status_code": status, "request_id": "rq",
                                           "body": body}, "error": None, **extra}


def _outcome_for(answerer, ticket, line, round_no=1):
    cid = batch.custom_id(answerer.request(ticket).params)
    record = batch.outcome_record(wire.classify_line(_line(cid, **line)), round_no, HALF, FULL)
    return json.dumps(record)


# ---- request lines ----------------------------------------------------------------------------

def test_request_line_is_stable_and_counts_tokens_as_the_provider():
    params = {"model": "gpt-4o-mini", "max_tokens": 100,
              "messages": [{"role": "system", "content": "be kind"},
                           {"role": "user", "content": "Ticket ID: T-1\nhelp me please"}]}
    line = json.loads(batch.request_line(params))
    assert line["custom_id"] == batch.custom_id(dict(params)) and len(line["custom_id"]) <= 64
    assert (line["method"], line["url"], line["body"]) == ("POST", wire.BATCH_ENDPOINT, params)
    assert batch.custom_id({**params, "max_tokens": 101}) != line["custom_id"]
    assert batch.line_tokens(params) == simulator_line_tokens(params, 256)


# ---- outcome lines ----------------------------------------------------------------------------

@pytest.mark.parametrize("line, kind, cls", [
    (_line("a"), providers.OK, None),
    (_line("a", 400, code="content_filter"), providers.PERMANENT, errors.ContentFiltered),
    (_line("a", 400, code="context_length_exceeded"), providers.PERMANENT,
     errors.ContextLengthExceeded),
    (_line("a", 500), providers.RETRYABLE, errors.ServerError),
    (_line("a", 429), providers.RETRYABLE, errors.RateLimited),
    (_line("a", 409), providers.RETRYABLE, errors.Conflict),
    (_line("a", None, code="batch_expired"), providers.RETRYABLE, batch.BatchNotRun),
    (_line("a", None, code="batch_cancelled"), providers.RETRYABLE, batch.BatchNotRun),
    ({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}},
     providers.RETRYABLE, errors.MalformedResponse),
])
def test_lines_are_classified_like_online_errors(line, kind, cls):
    outcome = wire.classify_line(line)
    assert outcome.kind == kind
    record = batch.outcome_record(outcome, 1, HALF, FULL)
    if cls is None:
        assert record["cost_usd"] == pytest.approx(HALF.cost(1000, 500))
        assert record["online_cost_usd"] == pytest.approx(2 * record["cost_usd"])
    else:
        assert type(batch.error_of(record)) is cls
    with pytest.raises(ValueError):
        wire.classify_line({"response": None})


# ---- the prefetched layer, in the answerer's stack --------------------------------------------

def test_a_batch_answer_is_the_result_at_the_batch_price_without_a_request():
    online = FakeLayer("online answer")
    answerer = TicketAnswerer(_config(), online, wall=lambda: 1.7e9)
    ticket = _ticket()
    record = asyncio.run(answerer.handle(
        _ticket(outcome=_outcome_for(answerer, ticket, {"content": "from batch"}, round_no=2))))
    assert isinstance(record, Result) and record.response == "from batch"
    assert online.requests == []
    assert record.stats.cost_usd == pytest.approx(HALF.cost(1000, 500))
    assert record.stats.batch_answers == 1 and record.stats.attempts == 2
    assert record.stats.batch_discount_usd == pytest.approx(HALF.cost(1000, 500))


def test_a_permanent_batch_error_is_the_online_dead_letter_and_exhausted_is_retries():
    answerer = TicketAnswerer(_config(), FakeLayer("unused"))
    ticket = _ticket()
    dead = asyncio.run(answerer.handle(_ticket(outcome=_outcome_for(
        answerer, ticket, {"status": 400, "code": "content_filter"}))))
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.http_status, dead.stats.attempts) == ("content_filter", 400, 1)
    exhausted = asyncio.run(answerer.handle(_ticket(outcome=_outcome_for(
        answerer, ticket, {"status": None, "code": "batch_expired"}, round_no=3))))
    assert (exhausted.reason, exhausted.error_class) == ("retries_exhausted", "BatchNotRun")


def test_without_an_outcome_or_for_another_request_the_ticket_goes_online():
    online = FakeLayer("online answer")
    answerer = TicketAnswerer(_config(), online)
    other = _outcome_for(answerer, _ticket(2), {"content": "for ticket 2"})
    for ticket in (_ticket(), _ticket(outcome=other)):
        record = asyncio.run(answerer.handle(ticket))
        assert record.response == "online answer" and record.stats.batch_answers == 0
    assert len(online.requests) == 2


def test_an_invalid_batch_answer_gets_its_one_repair_online():
    structured = StructuredOutput(name="n", schema_json=json.dumps(SCHEMA))
    online = FakeLayer('{"n": 7}')
    answerer = TicketAnswerer(_config(structured=structured), online)
    ticket = _ticket()
    record = asyncio.run(answerer.handle(_ticket(outcome=_outcome_for(
        answerer, ticket, {"content": "not json"}))))
    assert isinstance(record, Result) and record.output == {"n": 7}
    assert len(online.requests) == 1  # the repair only
    assert online.requests[0].messages[-2]["content"] == "not json"


def test_identical_requests_share_one_answer_paid_once():
    answerer = TicketAnswerer(_config(prompt_template="{% block user %}same{% endblock %}"),
                              FakeLayer("unused"))
    tickets = [_ticket(2), _ticket(1)]
    outcome = _outcome_for(answerer, tickets[0], {"content": "shared"})
    cid = json.loads(outcome)["custom_id"]
    attached = list(_attach((cid, {"tickets": tickets, "outcomes": [outcome]})))
    assert [t.id for t in attached] == ["T-1", "T-2"]
    records = [asyncio.run(answerer.handle(t)) for t in attached]
    assert [r.response for r in records] == ["shared", "shared"]
    assert records[0].stats.cost_usd > 0 and not records[0].cached
    assert records[1].cached and records[1].stats.cost_usd == 0


# ---- the driver's decisions -------------------------------------------------------------------

def test_waves_limits_and_fates():
    assert policy.effective_limit(0, 0) == 0
    assert policy.effective_limit(5000, 0) == 5000 and policy.effective_limit(5000, 4000) == 4000
    assert policy.may_submit(900, 0, 500)  # nothing running: the provider decides
    assert policy.may_submit(400, 500, 1000) and not policy.may_submit(600, 500, 1000)
    assert policy.may_submit(10**9, 10**9, 0)  # unknown limit
    message = "Enqueued token limit reached. Limit: 2,000,000 enqueued tokens, already ..."
    assert policy.learn_limit(message, 10, 10) == 2_000_000
    assert policy.learn_limit("queue full", 3000, 1000) == 3999
    assert policy.line_fate(providers.OK, 1, 3, late=True) == policy.FINAL
    assert policy.line_fate(providers.PERMANENT, 1, 3, late=False) == policy.FINAL
    assert policy.line_fate(providers.RETRYABLE, 1, 3, late=False) == policy.RETRY
    assert policy.line_fate(providers.RETRYABLE, 3, 3, late=False) == policy.FINAL
    assert policy.line_fate(providers.RETRYABLE, 1, 3, late=True) == policy.LEFTOVER
    assert not policy.past_deadline(100.0, 0, 10**9)
    assert policy.past_deadline(100.0, 50, 150.0) and not policy.past_deadline(100.0, 50, 149.9)


def test_the_cancel_wait_counts_from_the_cancel_and_the_sleep_wakes_when_due():
    # A batch cancelled at 100 with --batch_cancel_wait_secs 20 is waited for until 120.
    assert not policy.cancel_wait_over(100.0, 20, 119.9)
    assert policy.cancel_wait_over(100.0, 20, 120.0) and policy.cancel_wait_over(100.0, 20, 1e9)
    assert policy.cancel_wait_over(100.0, 0, 100.0)  # 0: no wait beyond the poll after the cancel
    # The sleep before the next poll: --batch_poll_secs, cut short by what comes first.
    assert policy.next_poll_in(100.0, 30.0, []) == 30.0
    assert policy.next_poll_in(100.0, 30.0, [110.0, 125.0]) == 10.0  # the deadline at 110
    assert policy.next_poll_in(100.0, 30.0, [90.0, 100.0]) == 30.0  # passed: acted on already
    assert policy.next_poll_in(100.0, 5.0, [120.0]) == 5.0


def test_the_cancel_wait_flag_becomes_frozen_config():
    from pipeline import config as config_lib
    from pipeline.options import TicketflowOptions

    def batch_api(*flags):
        return config_lib.from_options(TicketflowOptions(
            ["--input", "x.jsonl", "--output", "out", "--simulate", "--api", "batch",
             *flags])).batch_api

    assert batch_api().cancel_wait_secs == 600.0  # OpenAI's documented bound
    assert batch_api("--batch_cancel_wait_secs", "0").cancel_wait_secs == 0.0
    assert batch_api("--batch_cancel_wait_secs", "20.5").cancel_wait_secs == 20.5
    with pytest.raises(config_lib.ConfigError, match="--batch_cancel_wait_secs must be >= 0"):
        batch_api("--batch_cancel_wait_secs", "-1")


def test_journal_keeps_the_first_cancel_time_and_the_abandoned_batches(tmp_path):
    times = iter([1000.0, 1000.0, 1010.0, 1011.0, 1040.0, 1045.0, 1050.0, 1400.0])
    journal = Journal(str(tmp_path), wall=lambda: next(times))
    journal.append("job", job="J1", fingerprint="f")
    journal.append("packed", job="J1", round=1,
                   parts=[{"part": "p0", "path": "x0", "lines": 7, "tokens": 500},
                          {"part": "p1", "path": "x1", "lines": 3, "tokens": 200}])
    journal.append("created", job="J1", round=1, part="p0", batch_id="b0")
    journal.append("created", job="J1", round=1, part="p1", batch_id="b1")
    journal.append("cancelling", job="J1", round=1, part="p0", batch_id="b0")
    journal.append("cancelling", job="J1", round=1, part="p0", batch_id="b0")  # a resumed run's
    journal.append("cancel_abandoned", job="J1", round=1, part="p0", batch_id="b0")
    state = fold(Journal(str(tmp_path)).read())
    p0, p1 = state.round_parts(1)
    assert (p0.cancelling_at, p0.state, p0.running) == (1040.0, "abandoned", False)
    assert state.batches_cancelled == 1 and p1.running
    figures = state.figures()
    assert (figures["batches_abandoned"], figures["abandoned_batch_ids"]) == (1, ["b0"])
    assert figures["may_be_billed_twice"] == 7 == figures["answered_online_after_batch"]
    assert (figures["abandoned_seen_ended"], figures["billed_twice"]) == (0, 0)
    journal.append("abandoned_ended", job="J1", round=1, part="p0", batch_id="b0",
                   status="cancelled", answered=4)
    figures = fold(Journal(str(tmp_path)).read()).figures()
    assert (figures["abandoned_seen_ended"], figures["billed_twice"]) == (1, 4)
    assert state.open  # an abandoned batch does not close the job


def test_journal_folds_events_and_skips_a_torn_one(tmp_path):
    journal = Journal(str(tmp_path), wall=lambda: 1000.0)
    journal.append("job", job="J1", fingerprint="f")
    journal.append("packed", job="J1", round=1,
                   parts=[{"part": "p0", "path": "x0", "lines": 10, "tokens": 500},
                          {"part": "p1", "path": "x1", "lines": 10, "tokens": 500}])
    for name, fields in (("uploading", {}), ("uploaded", {"file_id": "f0"}),
                         ("creating", {"attempt": 1}), ("created", {"batch_id": "b0"}),
                         ("ended", {"status": "failed", "code": "token_limit_exceeded",
                                    "learnt_limit": 700, "alone": False})):
        journal.append(name, job="J1", round=1, part="p0", **fields)
    journal.append("uploading", job="J1", round=1, part="p1")
    (tmp_path / "batch" / "journal" / "000099.json").write_text('{"event": "crea')
    again = Journal(str(tmp_path))
    state = fold(again.read())
    p0, p1 = state.round_parts(1)
    assert (p0.state, p0.attempt, p0.file_id, p0.batch_id) == ("uploaded", 2, "f0", None)
    assert (p1.state, state.learnt_limit, state.token_limit_waits) == ("uploading", 700, 1)
    assert state.batches_created == 1 and state.open and not state.collected_all
    again.append("finished", job="J1")  # numbered after the torn file, never over it
    assert (tmp_path / "batch" / "journal" / "000100.json").exists()
    assert not fold(Journal(str(tmp_path)).read()).open


def test_part_writer_respects_lines_bytes_and_tokens(tmp_path):
    writer = PartWriter(str(tmp_path / "requests"), max_lines=3, max_bytes=10_000,
                        max_tokens=250)
    for i in range(7):
        writer.add(json.dumps({"custom_id": f"c{i}"}), 100)
    parts = writer.close()
    assert [p["lines"] for p in parts] == [2, 2, 2, 1]  # the token limit binds first
    assert [json.loads(x)["custom_id"] for p in parts for x in iter_lines(p["path"])] == \
        [f"c{i}" for i in range(7)]


# ---- prices and --estimate --------------------------------------------------------------------

def test_batch_prices_shipped_multiplied_or_online_for_old_files(tmp_path):
    shipped = load_pricing(None)
    for name, price in shipped.models.items():
        assert shipped.lookup_batch(name)[0] == price.scaled(0.5), name
    old = tmp_path / "old.json"
    old.write_text('{"models": {"m": {"input": 1, "output": 2}}}')
    assert load_pricing(str(old)).lookup_batch("m-1") == (Price(1, 1, 2), True)
    scaled = tmp_path / "scaled.json"
    scaled.write_text('{"batch_multiplier": 0.25, "models": {"m": {"input": 4, "output": 8},'
                      ' "n": {"input": 4, "output": 8, "batch": {"input": 3, "output": 3}}}}')
    pricing = load_pricing(str(scaled))
    assert pricing.lookup_batch("m")[0] == Price(1, 1, 2)
    assert pricing.lookup_batch("n")[0] == Price(3, 3, 3)
    scaled.write_text('{"batch_multiplier": 2, "models": {}}')
    with pytest.raises(PricingError, match="batch_multiplier"):
        load_pricing(str(scaled))


def test_estimate_gives_the_batch_cost_too(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": f"help {i}"}) + "\n" for i in range(5)))
    report = estimate(EstimateInputs(
        pattern=str(path), input_format="jsonl", fields=FieldMapping(), system_prompt="s",
        model="gpt-4o-mini", max_tokens=100, pricing=load_pricing(None)))
    assert report["tickets"] == 5 and report["cost_usd_expected"] > 0
    assert report["batch_cost_usd_expected"] == pytest.approx(
        report["cost_usd_expected"] / 2, abs=2e-6)
