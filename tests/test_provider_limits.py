"""Limits as each provider counts them: input and output tokens per minute, requests per day.

The local limiter's buckets with an injected clock; the flow's settlement with a fake caller;
the daily cap with an injected wall clock; the shared quota's Lua against a real ``redis-server``;
the flags' checks.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from pipeline.outputs import parse_utc
from tests.conftest import EXAMPLES
from tests.llm_fakes import FakeCaller, FakeClock
from tests.llm_fakes import llm_config as _config
from tests.redis_server import RedisServer
from transforms import errors
from transforms.limits.daily import DailyCap, SharedDailyCap, day_of
from transforms.limits.limiter import AdaptiveRateLimiter, AnnouncedLimit
from transforms.limits.quota import SharedRateLimiter, connect
from transforms.llm.caller import Request
from transforms.llm.flow import CallTrace, FlowControl
from transforms.llm.providers import limited_input_tokens
from transforms.llm.providers.anthropic import limit_headers
from transforms.llm.stop import StopSignal
from transforms.llm.tokens import ChargedShare


def _sends(limiter, clock, costs):
    """Acquires each (tokens, input, output) in turn; the clock time of each admission."""
    times = []

    async def go():
        for cost in costs:
            await limiter.acquire(*cost)
            times.append(clock.now)

    asyncio.run(go())
    return times


def _max_in_window(times, costs, window=1.0):
    return max(sum(c for u, c in zip(times, costs) if t <= u < t + window) for t in times)


# -- the local limiter ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,index", [("input", 1), ("output", 2)])
def test_one_token_kind_alone_paces_its_own_tokens(kind, index):
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep,
                                  **{f"{kind}_tokens_per_sec": 1000.0})
    cost = [900, 0, 0]
    cost[index] = 250  # 4 requests a second of this kind; the other kinds cost nothing
    times = _sends(limiter, clock, [tuple(cost)] * 41)
    assert times[-1] - times[0] == pytest.approx(10.0, rel=0.03)
    assert _max_in_window(times, [250] * 41) <= 1000


def test_the_limit_that_binds_wins():
    clock = FakeClock()
    # 50 requests/s and 100k tokens/s leave room; 2,000 output tokens/s at 400 each is 5/s.
    limiter = AdaptiveRateLimiter(50, 100_000, clock=clock, sleep=clock.sleep,
                                  input_tokens_per_sec=50_000, output_tokens_per_sec=2000)
    times = _sends(limiter, clock, [(600, 200, 400)] * 51)
    assert times[-1] - times[0] == pytest.approx(10.0, rel=0.03)
    # The same with input binding instead: 500 input tokens/s at 100 each is 5/s too.
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(50, 100_000, clock=clock, sleep=clock.sleep,
                                  input_tokens_per_sec=500, output_tokens_per_sec=50_000)
    times = _sends(limiter, clock, [(600, 100, 400)] * 51)
    assert times[-1] - times[0] == pytest.approx(10.0, rel=0.03)


def test_output_settled_lower_comes_back_in_full():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep,
                                  output_tokens_per_sec=1000)

    async def go():
        sent = []
        for _ in range(40):
            await limiter.acquire(0, 0, 256)  # reserve max_tokens...
            sent.append(clock.now)
            limiter.correct(256 - 64, sent_at=clock.now, kind="output_tokens")  # ...64 produced
        return sent

    times = asyncio.run(go())
    # Charged 64 each: ~15 a second, not the 4 that max_tokens alone would allow.
    assert (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(1000 / 64, rel=0.1)


def test_announced_output_budget_used_up_pauses():
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(0, 0, clock=clock, sleep=clock.sleep)
    limiter.observe_limits({"output_tokens": AnnouncedLimit(limit=8000, remaining=0,
                                                            reset_secs=30.0)})
    assert limiter.paused_until == pytest.approx(clock.now + 30.0)


def test_anthropic_headers_give_each_kind():
    headers = {f"anthropic-ratelimit-{name}-{part}": value
               for name, values in (("requests", ("50", "49", "2026-01-01T00:00:01Z")),
                                    ("input-tokens", ("40000", "39000", "2026-01-01T00:00:02Z")),
                                    ("output-tokens", ("8000", "0", "2026-01-01T00:00:06Z")))
               for part, value in zip(("limit", "remaining", "reset"), values)}
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    announced = limit_headers(headers, now=now)
    assert announced["output_tokens"] == AnnouncedLimit(8000, 0, 6.0)
    assert announced["input_tokens"] == announced["tokens"] == AnnouncedLimit(40000, 39000, 2.0)
    assert announced["requests"].remaining == 49


def test_cache_reads_are_free_only_where_the_provider_says_so():
    assert limited_input_tokens("anthropic", 3000, 2048) == 952
    assert limited_input_tokens("openai", 3000, 2048) == 3000


def test_charged_share_learns_towards_what_answers_charge():
    share = ChargedShare(weight=0.5)
    assert share.of(256) == 256  # nothing known: the whole bound
    for _ in range(12):
        share.learn(64, 256)
    assert share.of(256) == pytest.approx(64, rel=0.01)


def test_flow_reserves_and_settles_input_and_output():
    caller = FakeCaller(prompt_tokens=100, completion_tokens=20)
    flow = FlowControl(_config(worker_input_tokens_per_sec=1e6,
                               worker_output_tokens_per_sec=1e6, provider="anthropic"),
                       caller, StopSignal(), clock=(clock := FakeClock()),
                       wall=lambda: 1.7e9, sleep=clock.sleep)
    request = Request({"model": "m", "messages": [{"role": "user", "content": "x" * 400}],
                       "max_tokens": 200})

    async def go():
        await flow.start()
        await flow.answer(request, CallTrace(clock() + 600, "t"))

    asyncio.run(go())
    limiter = flow.limiter
    # The window holds what the answer charged, not the estimates.
    assert limiter.slices["output_tokens"].used(clock.now) == pytest.approx(20)
    assert limiter.slices["input_tokens"].used(clock.now) == pytest.approx(100)


# -- the daily cap --------------------------------------------------------------------------------

def _pacific(year, month, day, hour):
    return datetime.datetime(year, month, day, hour, tzinfo=datetime.timezone(
        datetime.timedelta(hours=-8))).timestamp()


def test_daily_cap_counts_to_its_limit_and_resets_at_pacific_midnight():
    wall = [_pacific(2026, 1, 15, 22)]
    cap = DailyCap(3, wall=lambda: wall[0])
    assert [cap.take_local() for _ in range(4)] == [True, True, True, False]
    assert cap.exhausted() and cap.resets_in() == pytest.approx(2 * 3600)
    wall[0] = _pacific(2026, 1, 16, 0) + 1
    assert not cap.exhausted() and cap.take_local()
    assert day_of(wall[0])[0] == "2026-01-16"


def test_flow_turns_a_used_up_day_into_daily_limit_errors():
    caller = FakeCaller()
    flow = FlowControl(_config(worker_requests_per_day=2, job_requests_per_day=2), caller,
                       StopSignal(), clock=(clock := FakeClock()), wall=lambda: 1.7e9,
                       sleep=clock.sleep)
    request = Request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 10})

    async def go():
        await flow.start()
        outcomes = []
        for i in range(4):
            try:
                await flow.answer(request, CallTrace(clock() + 600, f"t{i}"))
                outcomes.append("ok")
            except errors.DailyLimitReached as exc:
                outcomes.append(exc.reason)
                assert "--requests_per_day=2" in str(exc)
        return outcomes

    assert asyncio.run(go()) == ["ok", "ok", "daily_limit", "daily_limit"]
    assert len(caller.calls) == 2


# -- the shared quota in Redis --------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def _shared(url, name, **rates):
    fallback = AdaptiveRateLimiter(0, 0)
    return SharedRateLimiter(connect(url), name, rates.pop("rps", 0), rates.pop("tps", 0),
                             fallback, slack=0, **rates)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_shared_quota_paces_one_token_kind_across_workers(redis_url, kind):
    async def main():
        rate = 2000.0  # tokens/s; 200 per request: 10 requests/s for both workers together
        a, b = (_shared(redis_url, f"split-{kind}", **{f"{kind}_tokens_per_sec": rate})
                for _ in range(2))
        cost = {"input_tokens": 0.0, "output_tokens": 0.0}
        cost[f"{kind}_tokens"] = 200.0
        times = []

        async def worker(limiter):
            for _ in range(8):
                await limiter.acquire(0.0, **cost)
                times.append(asyncio.get_running_loop().time())

        await asyncio.gather(worker(a), worker(b))
        for limiter in (a, b):
            await limiter.client.aclose()
        return sorted(times)

    times = asyncio.run(main())
    assert times[-1] - times[0] == pytest.approx(1.5, abs=0.25)  # 16 requests, 10 a second


def test_shared_quota_binding_limit_and_settlement(redis_url):
    async def main():
        limiter = _shared(redis_url, "bind", rps=1000, tps=1e6, input_tokens_per_sec=1e6,
                          output_tokens_per_sec=1000)
        start = asyncio.get_running_loop().time()
        for _ in range(6):  # 250 output tokens each at 1,000/s: 4 a second
            await limiter.acquire(300, 50, 250)
        paced = asyncio.get_running_loop().time() - start
        ahead = float(await limiter.client.get(limiter.keys["output_tokens"]))
        await limiter.acorrect(200, kind="output_tokens")  # only 50 of the 250 were produced
        after = float(await limiter.client.get(limiter.keys["output_tokens"]))
        await limiter.client.aclose()
        return paced, ahead - after

    paced, credited_us = asyncio.run(main())
    assert paced == pytest.approx(1.25, abs=0.25)
    assert credited_us == pytest.approx(200 * 1e6 / 1000, rel=0.01)


def test_shared_daily_cap_is_one_count_for_every_worker(redis_url):
    async def main():
        clients = [connect(redis_url) for _ in range(2)]
        caps = [SharedDailyCap(client, "daily", 5, DailyCap(2.5)) for client in clients]
        taken = [await caps[i % 2].take() for i in range(8)]
        for client in clients:
            await client.aclose()
        return taken, caps

    taken, caps = asyncio.run(main())
    assert taken == [True] * 5 + [False] * 3
    assert all(cap.exhausted() for cap in caps)


# -- the flags ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,needle", [
    (["--input_tokens_per_minute", "-5"], "--input_tokens_per_minute must be >= 0"),
    (["--output_tokens_per_minute", "100", "--max_tokens", "256"],
     "--output_tokens_per_minute=100"),
    (["--requests_per_day", "-1"], "--requests_per_day must be >= 0"),
    (["--requests_per_day", "1", "--worker_share", "0.5"], "--requests_per_day=1"),
])
def test_bad_limit_flags_are_one_clear_error(flags, needle, tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.config import ConfigError, from_options

    tickets = tmp_path / "t.jsonl"
    tickets.write_text('{"id": "1", "body": "hi"}\n')
    with pytest.raises(ConfigError) as info:
        from_options(PipelineOptions(["--input", str(tickets), "--output",
                                      str(tmp_path / "out"), "--simulate", *flags]))
    assert needle in str(info.value)


# -- end to end: the pipeline against the simulator's Anthropic endpoint --------------------------

def _send_rate(results, charge):
    """What the run charged per second between its first and its last send."""
    sends = sorted((parse_utc(r["finished_at"]) - r["latency_ms"] / 1000.0, charge(r))
                   for r in results)
    span = sends[-1][0] - sends[0][0]
    return sum(c for _, c in sends[:-1]) / span


@pytest.mark.parametrize("kind", ["output", "input"])
def test_an_anthropic_job_keeps_to_the_one_token_limit_that_binds(run_pipeline, simulator_factory,
                                                                   tmp_path, kind):
    per_minute = 180_000 if kind == "output" else 160_000  # ~20 requests a second either way
    sim = simulator_factory(**{f"anthropic_{kind[0]}tpm": per_minute})
    tickets = tmp_path / "t.jsonl"
    tickets.write_text("".join((EXAMPLES / "tickets.jsonl").read_text().splitlines(True)[:100]))
    run = run_pipeline("--input", str(tickets), "--base_url", sim.base_url, "--model",
                       "claude-haiku-4-5", "--max_concurrency", "32",
                       f"--{kind}_tokens_per_minute", str(per_minute),
                       env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert run.returncode == 0, run.stderr[-2000:]
    summary = run.summary()
    assert summary["succeeded"] == 100 and summary["ledger_balanced"] is True
    stats = sim.stats()
    assert stats["rate_limited"] <= 0.005 * stats["requests"]
    field = "completion_tokens" if kind == "output" else "prompt_tokens"
    rate = _send_rate(run.results(), lambda r: r[field])
    # Within the limit, and near it: the limit binds (the first answers teach the charge).
    assert 0.7 * per_minute / 60 <= rate <= 1.03 * per_minute / 60, rate


def test_a_used_up_day_dead_letters_the_rest_as_daily_limit(run_pipeline, simulator_factory,
                                                            tmp_path):
    sim = simulator_factory()
    tickets = tmp_path / "t.jsonl"
    tickets.write_text("".join((EXAMPLES / "tickets.jsonl").read_text().splitlines(True)[:20]))
    run = run_pipeline("--input", str(tickets), "--base_url", sim.base_url,
                       "--model", "claude-haiku-4-5", "--requests_per_day", "8",
                       env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert run.returncode == 0, run.stderr[-2000:]
    summary = run.summary()
    assert (summary["succeeded"], summary["dead_lettered"]) == (8, 12)
    assert summary["ledger_balanced"] is True
    assert summary["dead_letter_reasons"] == {"daily_limit": 12}
    assert sim.stats()["requests"] == 8
    letter = run.dead_letters()[0]
    assert letter["reason"] == "daily_limit" and "--requests_per_day=8" in letter["message"]


def test_priorities_share_an_output_token_limit_the_same_way(redis_url):
    """Output tokens bind (250 a request, 2,500 a second: 10 requests a second): a live ``high``
    job keeps its short waits, a ``normal`` backfill takes the rest."""
    import statistics
    import uuid

    from tests.test_quota_priority import Worker, every_send, rate, run, simulate
    from transforms.limits.priorities import Admission
    from transforms.limits.quota import PREFIX

    class OutputOnly:
        """An admission whose ``tokens`` are output tokens (the Worker passes them first)."""

        def __init__(self, client, name, priority):
            self.admit = Admission(client, f"{PREFIX}:quota:{{{name}}}", priority,
                                   uuid.uuid4().hex, request_us=0.0, token_us=0.0,
                                   tau_us=50_000, spare_ms=1005, slack=0.1,
                                   output_us=1e6 / 2500)

        async def __call__(self, tokens, horizon_us, lane_paid=False, now_us=None):
            return await self.admit(0.0, horizon_us, lane_paid=lane_paid, now_us=now_us,
                                    output_tokens=tokens)

    async def main(client):
        name = f"output-{uuid.uuid4().hex[:6]}"
        live = Worker(OutputOnly(client, name, "high"),
                      arrivals=[0.5 + 0.5 * k for k in range(18)], tokens=250)  # 2/s
        backfill = [Worker(OutputOnly(client, name, "normal"), tokens=250) for _ in range(3)]
        await simulate([live, *backfill], until=10.0)
        return live, backfill

    live, backfill = run(main, redis_url)
    assert len(live.sent) == 18 and statistics.mean(live.waits[2:]) <= 0.15
    assert rate(every_send(*backfill), 2, 9) == pytest.approx(8.0, abs=0.6)
    assert _max_in_window(every_send(live, *backfill), [1] * 200) <= 11


def test_shared_limits_wire_every_limit_and_the_daily_cap(redis_url):
    from transforms.llm.limits import SHARED_PACE, shared_limits

    config = _config(shared_quota=redis_url, job_input_tokens_per_sec=1000.0,
                     job_output_tokens_per_sec=500.0, job_requests_per_day=100.0,
                     worker_requests_per_day=50.0, budget_key="run-1")

    async def main():
        limits = shared_limits(config, "wired")
        try:
            return limits.limiter, limits.daily, await limits.daily.take()
        finally:
            await limits.aclose()

    limiter, daily, taken = asyncio.run(main())
    assert limiter.input_us == pytest.approx(1e6 / (1000.0 * SHARED_PACE))
    assert limiter.output_us == pytest.approx(1e6 / (500.0 * SHARED_PACE))
    assert isinstance(daily, SharedDailyCap) and daily.per_day == 100 and taken
    assert daily.fallback.per_day == 50
