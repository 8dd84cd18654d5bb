"""``--endpoints``: the file's checks (each error with its line) and the router, with fake callers
and a fake clock (no HTTP, no sleeping)."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest

from pipeline.endpoints_file import (AUTO, EndpointsFileError, concurrency_of, parse_endpoints)
from tests.llm_fakes import FakeCaller, FakeClock, answer_text
from tests.llm_fakes import llm_config as _config
from transforms import errors
from transforms.limits.breaker import CLOSED
from transforms.llm.caller import Request
from transforms.llm.config import LlmConfig
from transforms.llm.flow import CallTrace, FlowControl
from transforms.llm.router import Endpoint, Router
from transforms.llm.stop import StopSignal

GOOD = """\
endpoints:
  - name: east
    base_url: http://east.example/v1
    model: gpt-4o-mini
    api_key_env: EAST_KEY
    requests_per_minute: 600
    tokens_per_minute: 200000
    max_concurrency: 16
    quota_key: east-quota
  - name: west
    base_url: https://west.example/v1
    provider: anthropic
    model: claude-3-5-haiku-latest
    max_concurrency: auto
  - base_url: http://cheap.example/v1
    role: fallback
"""


def _error(text: str) -> str:
    with pytest.raises(EndpointsFileError) as info:
        parse_endpoints(textwrap.dedent(text), "e.yaml")
    return str(info.value)


# ------------------------------------------------------------------------------ the file

def test_a_good_file_reads_every_field():
    east, west, cheap = parse_endpoints(GOOD, "e.yaml")
    assert (east.name, east.base_url, east.api_key_env, east.quota_key) == (
        "east", "http://east.example/v1", "EAST_KEY", "east-quota")
    assert (east.requests_per_minute, east.tokens_per_minute, east.max_concurrency) == (
        600.0, 200000.0, 16)
    assert east.role == "primary" and east.line == 2
    assert (west.provider, west.max_concurrency, west.requests_per_minute) == (
        "anthropic", AUTO, None)
    assert (cheap.name, cheap.role, cheap.line) == ("endpoint3", "fallback", 15)


def test_auto_concurrency_is_an_adaptive_controller_of_the_endpoint():
    base = LlmConfig(base_url="http://x/v1", max_concurrency=8)
    auto = concurrency_of(AUTO, base)
    assert auto["max_concurrency"] == 256 and auto["adaptive_concurrency"] is not None
    assert concurrency_of(None, base) == {"max_concurrency": 8, "adaptive_concurrency": None}
    assert concurrency_of(4, base) == {"max_concurrency": 4, "adaptive_concurrency": None}


@pytest.mark.parametrize("text, line, words", [
    ("endpoints: [\n", 2, "not valid YAML"),
    ("- a\n- b\n", 1, "mapping with one key"),
    ("endpoints: []\n", 1, "non-empty list"),
    ("other: 1\n", 1, "unknown key 'other'"),
    ("endpoints:\n  - base_url: http://a/v1\n  - just a string\n", 3, "must be a mapping"),
    ("endpoints:\n  - base_url: http://a/v1\n    rpm: 600\n", 3, "unknown key 'rpm'"),
    ("endpoints:\n  - base_url: ftp://a\n", 2, "base_url must be an http(s):// URL"),
    ("endpoints:\n  - base_url: http://a/v1\n    requests_per_minute: lots\n", 3,
     "requests_per_minute must be a number >= 0"),
    ("endpoints:\n  - base_url: http://a/v1\n\n    tokens_per_minute: -5\n", 4,
     "tokens_per_minute must be a number >= 0"),
    ("endpoints:\n  - base_url: http://a/v1\n    max_concurrency: 0\n", 3,
     "max_concurrency must be a whole number >= 1 or 'auto'"),
    ("endpoints:\n  - base_url: http://a/v1\n    max_concurrency: 2.5\n", 3, "whole number"),
    ("endpoints:\n  - base_url: http://a/v1\n    role: backup\n", 3,
     "role must be primary or fallback"),
    ("endpoints:\n  - base_url: http://a/v1\n    provider: gemini\n", 3, "provider must be"),
    ("endpoints:\n  - base_url: http://a/v1\n    api_key_env: MY-KEY\n", 3,
     "an environment variable's name"),
    ("endpoints:\n  - name: a b\n", 2, "name must be letters"),
    ("endpoints:\n  - name: a\n  - name: a\n", 3, "already used on line 2"),
    ("endpoints:\n  - base_url: http://a/v1\n    base_url: http://b/v1\n", 3, "given twice"),
    ("endpoints:\n  - base_url: http://a/v1\n    model: [a, b]\n", 3, "single value"),
    ("endpoints:\n  - base_url: http://a/v1\n    role: fallback\n", 2,
     "at least one must be 'role: primary'"),
])
def test_every_error_names_its_line(text, line, words):
    message = _error(text)
    assert message.startswith(f"--endpoints e.yaml, line {line}: "), message
    assert words in message


def test_a_bad_file_is_exit_2_with_its_line(run_pipeline, tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("endpoints:\n  - base_url: http://127.0.0.1:9/v1\n    role: spare\n")
    tickets = tmp_path / "t.jsonl"
    tickets.write_text('{"id": "1", "body": "hi"}\n')
    run = run_pipeline("--input", str(tickets), "--endpoints", str(path))
    assert run.returncode == 2, run.stderr
    assert f"--endpoints {path}, line 3: role must be primary or fallback" in run.stderr
    assert "Traceback" not in run.stderr


# ------------------------------------------------------------------------------ the router

def _request(text="hello"):
    return Request({"model": "job-model", "messages": [{"role": "user", "content": text}],
                    "max_tokens": 50})


def _endpoint(name, clock, role="primary", script=None, rpm=600.0, **config):
    caller = FakeCaller(script)
    config = _config(endpoint_name=name, endpoint_role=role, model=f"{name}-model",
                     worker_requests_per_sec=rpm / 60.0, max_concurrency=8, **config)
    flow = FlowControl(config, caller, StopSignal(), clock=clock, wall=lambda: 1.7e9,
                       sleep=clock.sleep)
    return Endpoint(flow), caller


async def _router(clock, *endpoints):
    for endpoint in endpoints:
        await endpoint.flow.start()
    return Router(list(endpoints), clock=clock)


def _trace(clock):
    return CallTrace(clock() + 600, "t")


def test_tickets_spread_in_proportion_to_capacity():
    async def main():
        clock = FakeClock()
        slow, _ = _endpoint("slow", clock, rpm=600)
        fast, _ = _endpoint("fast", clock, rpm=1800)
        router = await _router(clock, slow, fast)
        picked = {"slow": 0, "fast": 0}
        for _ in range(400):  # tickets routed and not yet finished: each counts where it went
            endpoint = router.pick(100)
            endpoint.pending += 1
            picked[endpoint.name] += 1
        return picked
    picked = asyncio.run(main())
    assert picked["fast"] == pytest.approx(300, abs=2) and picked["slow"] == pytest.approx(
        100, abs=2)


def test_a_429_moves_the_ticket_to_another_endpoint_without_waiting():
    async def main():
        clock = FakeClock()

        def throttled(params, n):
            raise errors.RateLimited("slow down", status=429, retry_after=30)
        a, a_caller = _endpoint("a", clock, script=throttled, rpm=6000)
        b, b_caller = _endpoint("b", clock, rpm=600)
        router = await _router(clock, a, b)
        trace = _trace(clock)
        answer = await router.answer(_request(), trace)
        return answer, trace, clock, a_caller, b_caller, router
    answer, trace, clock, a_caller, b_caller, router = asyncio.run(main())
    assert answer.completion.content == answer_text(_request().params)
    assert len(a_caller.calls) == 1 and len(b_caller.calls) == 1
    assert trace.endpoint == "b" and trace.model == "b-model"
    assert sum(clock.sleeps) < 1.0  # not the 30 s retry-after
    # Each endpoint sent its own model; the request (and so the store's key) kept the job's.
    assert a_caller.calls[0]["model"] == "a-model" and b_caller.calls[0]["model"] == "b-model"
    assert dict(trace.by_endpoint) == {"a": [1, 1, 0], "b": [1, 0, 0]}
    # Paused by the 429: the next ticket goes to b at once.
    assert router.pick(100).name == "b"


def test_fallback_only_while_every_primary_is_out_and_primary_rejoins():
    async def main():
        clock = FakeClock()
        down = {"on": False}

        def primary_script(params, n):
            if down["on"]:
                raise errors.ConnectionFailed("refused")
            return answer_text(params)
        primary, p_caller = _endpoint("main", clock, script=primary_script, rpm=300)
        spare, s_caller = _endpoint("spare", clock, role="fallback", rpm=6000)
        router = await _router(clock, primary, spare)
        answered = []

        async def one():
            trace = _trace(clock)
            await router.answer(_request(), trace)
            answered.append(trace.endpoint)
        for _ in range(10):  # the primary is up: the fallback takes nothing
            await one()
        up_count = answered.count("main")
        down["on"] = True
        for _ in range(30):
            await one()
        breaker_state = primary.flow.breaker.state
        down["on"] = False
        clock.now += 120  # past the breaker's next probe
        for _ in range(10):
            await one()
        return answered, up_count, breaker_state, primary, s_caller
    answered, up_count, breaker_state, primary, s_caller = asyncio.run(main())
    assert up_count == 10 and answered[:10] == ["main"] * 10
    assert breaker_state != CLOSED  # the outage opened the primary's breaker
    assert answered[10:40].count("spare") == 30  # every ticket answered, none dead
    assert answered[40:] == ["main"] * 10  # the probe closed the breaker: back to the primary
    assert primary.flow.breaker.state == CLOSED


def test_every_endpoint_out_longer_than_max_outage_is_provider_unavailable():
    async def main():
        clock = FakeClock()

        def refused(params, n):
            raise errors.ConnectionFailed("refused")
        a, _ = _endpoint("a", clock, script=refused, max_outage_secs=60)
        b, _ = _endpoint("b", clock, script=refused, role="fallback", max_outage_secs=60)
        router = await _router(clock, a, b)
        for _ in range(20):  # open both breakers
            try:
                await router.answer(_request(), _trace(clock))
            except errors.ProviderError:
                pass
        with pytest.raises(errors.ProviderUnavailable) as info:
            await router.answer(_request(), CallTrace(clock() + 10_000, "t"))
        return router.outage_secs(), str(info.value)
    outage, message = asyncio.run(main())
    assert 60 <= outage <= 62 and "every endpoint was out" in message


def test_one_endpoint_is_its_flow_control_as_before():
    async def main():
        clock = FakeClock()
        calls = []

        def flaky(params, n):
            calls.append(n)
            if n == 1:
                raise errors.ServerError("boom", status=503)
            return answer_text(params)
        only, caller = _endpoint("only", clock, script=flaky)
        router = await _router(clock, only)
        trace = _trace(clock)
        await router.answer(_request(), trace)
        return trace, clock, caller
    trace, clock, caller = asyncio.run(main())
    # The flow's own retry loop: a backoff, the same endpoint again.
    assert len(caller.calls) == 2 and trace.retries == 1 and clock.sleeps
    assert trace.endpoint is None


def test_endpoints_file_builds_one_config_per_endpoint(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import config as config_lib
    monkeypatch.setenv("EAST_KEY", "sk-east")
    path = tmp_path / "e.yaml"
    path.write_text(GOOD)
    argv = ["--input", "t.jsonl", "--output", str(tmp_path / "out"), "--endpoints", str(path),
            "--max_concurrency", "8", "--requests_per_minute", "120"]
    config = config_lib.from_options(PipelineOptions(argv))
    east, west, cheap = config.llm.endpoints
    assert (east.endpoint_name, east.max_concurrency, east.public_api_key) == ("east", 16, None)
    assert east.job_requests_per_sec == 10.0 and east.quota_key == "east-quota"
    assert (west.provider, west.api_key_env, west.max_concurrency) == (
        "anthropic", "ANTHROPIC_API_KEY", 256)  # auto: its own controller, up to 256
    assert west.adaptive_concurrency is not None and east.adaptive_concurrency is None
    assert west.job_requests_per_sec == 2.0  # not in the file: the job's --requests_per_minute
    assert cheap.endpoint_role == "fallback" and cheap.model == "gpt-4o-mini"
    assert config.llm.max_concurrency == 16 + 256 + 8 and config.llm.base_url == east.base_url
    dumped = json.dumps(config_lib.redacted(config))
    assert "sk-east" not in dumped and '"name": "west"' in dumped
    with pytest.raises(config_lib.ConfigError, match="does not go with --base_url"):
        config_lib.from_options(PipelineOptions(argv + ["--base_url", "http://x/v1"]))
