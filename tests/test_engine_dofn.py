"""The DoFn and the engine's hand-over, driven by hand: window, barrier, stop, tags, failures.

A fake caller (no HTTP) with an injected delay; the DoFn is set up and run outside a pipeline
so that the order of its outputs can be checked.
"""

from __future__ import annotations

import asyncio
import queue

from tests.llm_fakes import FakeCaller, answer_text
from tests.llm_fakes import llm_config as _config
from transforms.llm.stop import StopSignal
from transforms.records import Ticket


class _TimedCaller(FakeCaller):
    """Answers at once, or after ``slow_secs`` for a body containing SLOW; counts concurrency."""

    def __init__(self, slow_secs=1.5):
        super().__init__()
        self.slow_secs = slow_secs
        self.now_in_flight = self.max_in_flight = 0

    async def call(self, params, timeout):
        self.now_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.now_in_flight)
        try:
            text = params["messages"][-1]["content"]
            await asyncio.sleep(self.slow_secs if "SLOW" in text else 0)
            return await super().call(params, timeout)
        finally:
            self.now_in_flight -= 1


def _drive(config, caller, elements, stop=None):
    """Runs the DoFn by hand over ``elements`` in one bundle; returns (record, timestamp) pairs
    in output order, and the dead letters' records apart."""
    from apache_beam.pvalue import TaggedOutput
    from apache_beam.transforms.window import GlobalWindow

    from transforms.llm.dofn import _CallModelFn
    from transforms.llm.engine import shared_handle

    fn = _CallModelFn(config, shared_handle(config.engine_key()),
                      (lambda: stop) if stop is not None else None, lambda c, k: caller)
    fn.setup()
    fn.start_bundle()
    outputs = []
    for n, element in enumerate(elements):
        outputs += list(fn.process(element, window=GlobalWindow(), timestamp=100 + n))
        assert fn._in_flight <= config.max_concurrency  # the DoFn's window
    outputs += list(fn.finish_bundle())
    fn.teardown()
    results, dead = [], []
    for out in outputs:
        target = dead if isinstance(out, TaggedOutput) else results
        value = out.value if isinstance(out, TaggedOutput) else out
        assert value.windows == (GlobalWindow(),)
        target.append((value.value, int(value.timestamp)))
    return results, dead


def _tickets(prefix, n, slow=()):
    return [Ticket(id=f"{prefix}{i}", subject="", body="SLOW" if i in slow else f"b{i}",
                   fields={"id": f"{prefix}{i}"}) for i in range(n)]


def test_dofn_keeps_a_continuous_window_and_tags_each_record():
    caller = _TimedCaller()
    config = _config(max_concurrency=4, seed=101)
    results, dead = _drive(config, caller, [("k", _tickets("a", 4, slow={0})),
                                            ("k", _tickets("b", 12))])
    assert dead == [] and len(results) == 16 and len(caller.calls) == 16
    assert caller.max_in_flight <= 4
    # A slow request holds back nothing but itself: the rest of both batches went meanwhile.
    assert results[-1][0].id == "a0"
    stamps = {record.id: stamp for record, stamp in results}
    assert {stamps[f"a{i}"] for i in range(4)} == {100} and stamps["b11"] == 101
    for record, _ in results:  # each record is its own ticket's answer
        body = "SLOW" if record.id == "a0" else f"b{record.id[1:]}"
        assert record.response == f"Ticket ID: {record.id}\n\n{body}"[::-1]


def test_dofn_barrier_waits_for_each_batch():
    caller = _TimedCaller(slow_secs=0.3)
    config = _config(max_concurrency=4, seed=102, dispatch="barrier")
    results, _ = _drive(config, caller, [("k", _tickets("a", 4, slow={0})),
                                         ("k", _tickets("b", 4))])
    assert {record.id for record, _ in results[:4]} == {"a0", "a1", "a2", "a3"}


def test_dofn_once_stopped_sends_nothing_and_dead_letters_each_ticket():
    caller = _TimedCaller()
    stop = StopSignal()
    stop.request_stop()
    results, dead = _drive(_config(seed=103), caller, [("k", _tickets("a", 5))], stop=stop)
    assert results == [] and caller.calls == []
    assert [(d.id, d.reason, stamp) for d, stamp in dead] == [
        (f"a{i}", "interrupted", 100) for i in range(5)]


def test_engine_start_many_returns_records_and_failures_with_their_tags():
    from transforms.llm.engine import Engine

    async def handle(item):
        if item == "boom":
            raise ValueError("boom")
        await asyncio.sleep(0.01 if item == "late" else 0)
        return item.upper()

    engine = Engine(_config(seed=104), "k", StopSignal(), lambda c, k: FakeCaller())
    results = queue.SimpleQueue()
    try:
        engine.start_many(handle, [("late", 1), ("x", 2), ("boom", 3)], results)
        got = [results.get(timeout=5) for _ in range(3)]
    finally:
        engine.close()
    assert got[-1] == ("LATE", 1)
    assert ("X", 2) in got
    failure = [g for g in got if g[1] == 3][0][0]
    assert isinstance(failure, ValueError) and str(failure) == "boom"


def test_dofn_fails_the_job_when_the_first_requests_show_a_wrong_path():
    import pytest

    from transforms import errors

    def script(params, n):
        raise errors.NotFound("Invalid URL (POST /nope/v1/chat/completions)", status=404)

    caller = FakeCaller(script)
    with pytest.raises(errors.JobMisconfigured) as caught:
        _drive(_config(max_concurrency=8, seed=105), caller, [("k", _tickets("a", 30))])
    assert len(caller.calls) == 3  # not one per ticket
    assert "check --base_url" in caught.value.message
    assert errors.misconfiguration(caught.value) == caught.value.message


def test_dofn_dead_letters_one_tickets_404_among_answers():
    from transforms import errors

    def script(params, n):
        if params["messages"][-1]["content"].endswith("b0"):
            raise errors.NotFound("no such thing", status=404)
        return answer_text(params)

    caller = FakeCaller(script)
    results, dead = _drive(_config(max_concurrency=8, seed=106), caller,
                           [("k", _tickets("a", 20))])
    assert len(results) == 19 and [(d.id, d.reason) for d, _ in dead] == [("a0", "not_found")]
