"""The batch driver against the simulator's Batch API, through the real ``openai`` client.

The simulator and the driver share a fake clock: batches move through their lifecycle when the
driver "sleeps" between polls, so rounds, waves, expiry and deadlines take no real time. The
request files are written directly (no Beam): the pack pipeline is the end-to-end tests' part.
"""

from __future__ import annotations

import io
import json

import openai
import pytest

from pipeline.batch.driver import BatchDriver, DriverSettings
from pipeline.batch.files import PartWriter, iter_lines
from pipeline.batch.journal import Journal
from simulator import SimulatorConfig, start
from transforms.llm.batch import line_tokens, request_line
from transforms.llm.providers.openai import MAX_BYTES
from transforms.llm.providers.openai_batch import BatchClient
from transforms.pricing import Price
from transforms.retry import RetryPolicy

HALF, FULL = Price(0.075, 0.0375, 0.30), Price(0.15, 0.075, 0.60)


class Clock:
    """The shared fake clock (monotonic for the simulator, wall for the driver)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, secs: float) -> None:
        self.now += secs


def _params(i, text=None):
    text = text or f"Ticket ID: T-{i}\nHelp with request {i}."
    return {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": text}]}


def _tokens(ids):
    return sum(line_tokens(_params(i)) for i in ids)


@pytest.fixture
def world(tmp_path):
    """``make(n, max_lines=..., **simulator_flags)`` → (driver factory, simulator, paths)."""
    sims = []

    def make(n, max_lines=10, texts=None, **flags):
        clock = Clock()
        sim = start(SimulatorConfig(port=0, **flags), clock=clock)
        sims.append(sim)
        writer = PartWriter(str(tmp_path / "batch" / "J1" / "round-1" / "requests"), max_lines,
                            MAX_BYTES)
        for i in range(n):
            params = _params(i, texts[i] if texts else None)
            writer.add(request_line(params), line_tokens(params))
        journal = Journal(str(tmp_path), wall=clock)
        events = [journal.append("job", job="J1", fingerprint="f"),
                  journal.append("packed", job="J1", round=1, parts=writer.close())]

        def driver(max_rounds=3, deadline=0.0, known_limit=0, submit_only=False,
                   cancel_wait=600.0, poll=1.0, sleep=None):
            settings = DriverSettings(
                work_dir=str(tmp_path / "batch" / "J1"), max_lines=max_lines,
                max_bytes=MAX_BYTES, max_enqueued_tokens=known_limit, deadline_secs=deadline,
                poll_secs=poll, max_rounds=max_rounds, prices=(HALF, FULL),
                submit_only=submit_only, cancel_wait_secs=cancel_wait)
            client = BatchClient(sim.base_url, "test", timeout=10,
                                 retry=RetryPolicy(max_retries=2), sleep=lambda s: None)
            return BatchDriver(settings, client, journal, Journal(str(tmp_path)).read(),
                               wall=clock, sleep=sleep or clock.sleep)
        driver.clock = clock
        return driver, sim, events
    yield make
    for sim in sims:
        sim.close()


def _totals(state):
    totals = {}
    for part in state.parts.values():
        for key, value in part.counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _outcomes(tmp_path):
    return [json.loads(line) for path in sorted((tmp_path / "batch" / "J1").glob(
        "round-*/outcomes-*.jsonl")) for line in iter_lines(str(path))]


@pytest.mark.parametrize("known", [True, False], ids=["known_limit", "learnt_limit"])
def test_parts_go_in_waves_that_fit_the_enqueued_token_limit(world, tmp_path, known):
    limit = int(_tokens(range(20, 30)) * 1.5)  # one part of 10 at a time
    driver, sim, _ = world(30, max_lines=10, batch_secs=10, batch_max_enqueued_tokens=limit)
    d = driver(known_limit=limit if known else 0)
    assert d.run() is True
    assert _totals(d.state)["ok"] == 30
    waits = d.state.token_limit_waits
    assert sim.stats()["batches_created"] == 3 + waits
    if known:
        assert waits == 0
    else:
        assert waits >= 1 and d.state.learnt_limit == limit  # read from the provider's message
    assert sim.stats()["batch_requests"] == 30 + waits * 10


def test_a_part_over_the_limit_is_split(world, tmp_path):
    limit = _tokens(range(10)) // 3
    driver, _, _ = world(10, max_lines=10, batch_secs=10, batch_max_enqueued_tokens=limit)
    d = driver()
    assert d.run() is True
    assert _totals(d.state)["ok"] == 10
    assert len(d.state.round_parts(1)) >= 3  # split into parts that fit
    assert all(p.tokens <= limit for p in d.state.round_parts(1))


def test_only_expired_lines_are_resubmitted_then_exhausted(world, tmp_path):
    driver, sim, _ = world(10, max_lines=10, batch_secs=10, batch_expire_fraction=0.5)
    d = driver(max_rounds=2)
    assert d.run() is True
    # Round 1 finishes 5 of 10; round 2 gets the other 5 only, finishes 2; 3 are exhausted.
    assert sim.stats()["batch_requests"] == 15 and sim.stats()["batches_created"] == 2
    assert _totals(d.state) == {"ok": 7, "retry": 5, "exhausted": 3}
    outcomes = _outcomes(tmp_path)
    assert len(outcomes) == 10 == len({o["custom_id"] for o in outcomes})
    exhausted = [o for o in outcomes if "completion" not in o]
    assert {(o["code"], o["round"]) for o in exhausted} == {("batch_expired", 2)}


def test_permanent_and_failed_lines_are_sorted(world, tmp_path):
    texts = [f"request {i}" + (" CONTENT_FILTER" if i == 0 else "") for i in range(10)]
    driver, _, _ = world(10, texts=texts, batch_secs=2, batch_p_line_fail=0.2, seed=3)
    d = driver(max_rounds=1)
    assert d.run() is True
    totals = _totals(d.state)
    assert totals["permanent"] == 1 and totals["ok"] + totals["exhausted"] == 9
    assert totals["exhausted"] >= 1  # 2 lines answered 500 (one may be the filtered one)
    codes = {o.get("code") for o in _outcomes(tmp_path) if "completion" not in o}
    assert "content_filter" in codes


def test_the_deadline_cancels_and_leaves_the_rest_online(world, tmp_path):
    driver, sim, _ = world(20, max_lines=20, batch_secs=100)
    d = driver(deadline=40.0)
    assert d.run() is True
    assert sim.stats()["batches_cancelled"] == 1 and d.state.batches_cancelled == 1
    totals = _totals(d.state)
    # In progress from 10 s to 90 s: about (40-10)/80 of the lines were done by the deadline.
    assert 0 < totals["ok"] < 20 and totals["ok"] + totals["leftover"] == 20
    assert len(_outcomes(tmp_path)) == totals["ok"]  # the rest has no outcome: online


def test_a_creation_in_doubt_is_found_by_listing_and_not_created_again(world, tmp_path):
    driver, sim, events = world(5, batch_secs=5)
    part = events[1]["parts"][0]
    client = openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0)
    data = open(part["path"], "rb").read()  # noqa: SIM115 - a small test file
    file_id = client.files.create(file=("p.jsonl", io.BytesIO(data)), purpose="batch").id
    # The crash: the driver wrote "creating", the provider created it, nobody wrote "created".
    journal = Journal(str(tmp_path))
    journal.read()
    for name, fields in (("uploaded", {"file_id": file_id}), ("creating", {"attempt": 1})):
        journal.append(name, job="J1", round=1, part=part["part"], **fields)
    meta = {"ticketflow_job": "J1", "ticketflow_part": part["part"], "ticketflow_round": "1",
            "ticketflow_attempt": "1"}
    target = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                   completion_window="24h", metadata=meta)
    other = client.files.create(file=("o.jsonl", io.BytesIO(data)), purpose="batch").id
    for _ in range(105):  # newer batches: the target is on the second page of the list
        client.batches.create(input_file_id=other, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"other": "job"})
    created = sim.stats()["batches_created"]
    d = driver()
    assert d.run() is True
    assert sim.stats()["batches_created"] == created  # found, not created again
    assert d.state.batches_found == 1 and d.state.round_parts(1)[0].batch_id == target.id
    assert _totals(d.state)["ok"] == 5


def test_submit_only_returns_then_a_resume_collects(world, tmp_path):
    driver, sim, _ = world(12, max_lines=4, batch_secs=5)
    first = driver(submit_only=True)
    assert first.run() is False
    assert sim.stats()["batches_created"] == 3
    second = driver()
    assert second.run() is True
    assert sim.stats()["batches_created"] == 3 and _totals(second.state)["ok"] == 12


def _journal(tmp_path, name):
    return [e for e in Journal(str(tmp_path)).read() if e["event"] == name]


def test_a_cancel_outlasting_the_wait_is_abandoned_and_its_late_answers_counted(world, tmp_path):
    # Batches of 1000 s: in progress from 100 s to 900 s; a cancel lasts min(100 s, 600 s).
    driver, sim, _ = world(20, max_lines=10, batch_secs=1000)
    clock = driver.clock
    d = driver(deadline=300.0, cancel_wait=30.0, poll=70.0)
    assert d.run() is True
    # The long poll is cut short: cancelled AT the deadline, abandoned AT the end of the wait.
    assert [e["at"] - 1000.0 for e in _journal(tmp_path, "cancelling")] == [300.0, 300.0]
    assert [e["at"] - 1000.0 for e in _journal(tmp_path, "cancel_abandoned")] == [330.0, 330.0]
    assert clock.now - 1000.0 == 330.0  # it did not wait for the cancels (they end at 400 s)
    assert sim.stats()["batches_cancelled"] == 2
    assert [p.state for p in d.state.round_parts(1)] == ["abandoned", "abandoned"]
    assert not _outcomes(tmp_path)  # no outcome: every ticket is answered online
    figures = d.state.figures()
    assert figures["batches_abandoned"] == 2 and figures["may_be_billed_twice"] == 20
    assert figures["answered_online_after_batch"] == 20 and figures["billed_twice"] == 0
    assert figures["abandoned_batch_ids"] == [p.batch_id for p in d.state.round_parts(1)]
    d.look_at_abandoned()  # still cancelling: nothing to count yet
    assert d.state.figures()["abandoned_seen_ended"] == 0
    clock.sleep(200.0)  # the cancels ended; their output holds what they ran before the cancel
    d.look_at_abandoned()
    client = openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0)
    done = sum(client.batches.retrieve(b).request_counts.completed
               for b in figures["abandoned_batch_ids"])
    figures = d.state.figures()
    assert done > 0 and figures["billed_twice"] == done and figures["abandoned_seen_ended"] == 2
    assert len(_journal(tmp_path, "abandoned_ended")) == 2
    d.look_at_abandoned()  # journaled: not looked at again
    assert len(_journal(tmp_path, "abandoned_ended")) == 2


class _Crash(Exception):
    pass


def test_a_resumed_run_keeps_the_cancel_time_and_the_abandonment(world, tmp_path):
    driver, sim, _ = world(10, max_lines=10, batch_secs=1000)
    clock = driver.clock

    def crash_during_the_wait(secs):
        clock.sleep(secs)
        if clock.now >= 1050.0:
            raise _Crash

    with pytest.raises(_Crash):
        driver(deadline=40.0, cancel_wait=30.0, sleep=crash_during_the_wait).run()
    assert _journal(tmp_path, "cancelling")[0]["at"] == 1040.0
    clock.now = 1080.0  # restarted after the wait (cancel at 1040 + 30), the batch cancelling
    resumed = driver(deadline=40.0, cancel_wait=30.0)
    assert resumed.run() is True
    assert clock.now == 1080.0  # abandoned at once: the wait is not counted again from zero
    assert len(_journal(tmp_path, "cancelling")) == 1 and sim.stats()["batches_cancelled"] == 1
    assert [e["at"] for e in _journal(tmp_path, "cancel_abandoned")] == [1080.0]
    clock.now = 1200.0  # the cancel ended meanwhile: a later resume keeps the decision
    again = driver(deadline=40.0, cancel_wait=30.0)
    assert again.run() is True
    assert [p.state for p in again.state.round_parts(1)] == ["abandoned"]
    assert not _outcomes(tmp_path) and again.state.figures()["may_be_billed_twice"] == 10
