"""Tests of the provider simulator, mostly through the real ``openai`` client.

In-process servers come from ``simulator.start`` (port 0); rate-limit tests give it a fake clock
so they move time instead of sleeping. One test runs ``python -m simulator`` as a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest

from simulator import (
    SimulatorConfig,
    add_arguments,
    config_from_argv,
    count_tokens,
    prompt_tokens,
    start,
)
from simulator.config import flag_help
from simulator.content import instance_for_schema, parse_ticket
from simulator.limits import RateLimiter, format_duration
from simulator.server import Simulator, SimulatorHandle, _start_site

REPO = Path(__file__).resolve().parent.parent

TICKET = ("Ticket ID: T-000123\nSubject: Cannot log in after password reset\n\n"
          "I reset my password yesterday and now the app says my password is wrong.")
MESSAGES = [{"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": TICKET}]

RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                      "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                      "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")

TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "ticket_id": {"type": "string"},
        "category": {"type": "string", "enum": ["account", "billing", "technical"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "summary": {"type": "string", "maxLength": 40, "minLength": 5},
        "escalate": {"type": "boolean"},
        "version": {"const": "v1"},
        "assignee": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                 "minItems": 1, "maxItems": 4},
        "customer": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"},
                           "tier": {"anyOf": [{"type": "string", "enum": ["free", "pro"]},
                                              {"type": "null"}]}},
            "required": ["email", "tier"],
            "additionalProperties": False,
        },
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "maxItems": 3},
    },
    "required": ["ticket_id", "category", "priority", "confidence", "summary", "escalate",
                 "version", "assignee", "tags", "customer", "steps"],
    "additionalProperties": False,
    "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer",
                                                               "exclusiveMinimum": 0}},
                       "required": ["n"], "additionalProperties": False}},
}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorHandle]]:
    """Starts simulators on free ports and closes them after the test."""
    handles: list[SimulatorHandle] = []

    def make(**overrides: Any) -> SimulatorHandle:
        handle = start(**overrides)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorHandle]) -> SimulatorHandle:
    return make_sim()


def client_for(handle: SimulatorHandle, timeout: float = 10.0,
               api_key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(base_url=handle.base_url, api_key=api_key, max_retries=0,
                         timeout=timeout)


def complete(client: openai.OpenAI, messages: list[dict[str, Any]] | None = None,
             **kwargs: Any) -> Any:
    return client.chat.completions.create(model=kwargs.pop("model", "gpt-4o-mini"),
                                          messages=messages or MESSAGES, **kwargs)


def raw_request(handle: SimulatorHandle, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_error_shape(body: Any, type_: str, code: str | None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# ---- pure functions -----------------------------------------------------------------------------


def test_token_counting_convention() -> None:
    assert count_tokens("") == 0
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    messages = [{"role": "system", "content": "x" * 8}, {"role": "user", "content": "y" * 9}]
    assert prompt_tokens(messages) == 2 + 3 + 3 + 3 + 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]
    assert prompt_tokens(parts) == 1 + 3 + 3


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.12, "120ms"), (0.0001, "1ms"), (1, "1s"), (1.2, "1.2s"), (59.5, "59.5s"),
    (60, "1m0s"), (90.5, "1m30.5s"), (360, "6m0s"), (3600, "1h0m0s"),
])
def test_format_duration_matches_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_limiter_rolling_minute_window_with_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=3, tpm=0, clock=clock)
    assert [limiter.acquire(1).allowed for _ in range(3)] == [True, True, True]
    clock.advance(10)
    rejected = limiter.acquire(1)
    assert not rejected.allowed and rejected.kind == "requests"
    assert (rejected.limit, rejected.used, rejected.requested) == (3, 3, 1)
    assert rejected.retry_after == pytest.approx(50)
    for _ in range(5):  # rejections consume nothing
        assert not limiter.acquire(1).allowed
    clock.advance(50)
    assert limiter.acquire(1).allowed
    assert limiter.headers()["x-ratelimit-remaining-requests"] == "2"  # all three expired


def test_limiter_tokens_and_oversized_request() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=0, tpm=1000, clock=clock)
    assert limiter.acquire(600).allowed
    rejected = limiter.acquire(600)
    assert rejected.kind == "tokens" and rejected.used == 600 and rejected.requested == 600
    assert limiter.acquire(400).allowed  # a smaller request still fits
    assert limiter.acquire(2000).retry_after == float("inf")  # can never fit
    headers = limiter.headers()
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "1000000000"  # unlimited


def test_limiter_burst_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=0, burst_secs=1, clock=clock)
    assert limiter.acquire(1).allowed
    rejected = limiter.acquire(1)
    assert not rejected.allowed and rejected.window_secs == 1
    clock.advance(1.0)
    assert limiter.acquire(1).allowed
    # Over a whole minute the per-minute limit still applies.
    allowed = 1
    for _ in range(120):
        clock.advance(0.5)
        allowed += limiter.acquire(1).allowed
    assert allowed == 60 + 1  # 61 over a 61 s span, never more than 60 in any minute


def test_config_flags_and_validation() -> None:
    config = config_from_argv(["--port", "0", "--rpm", "60", "--seed", "1", "--p_503", "0.5",
                               "--log_requests"])
    assert (config.port, config.rpm, config.seed, config.p_503, config.log_requests) == \
        (0, 60, 1, 0.5, True)
    assert set(flag_help()) == {f.name for f in config.__dataclass_fields__.values()}
    with pytest.raises(ValueError):
        SimulatorConfig(p_500=0.7, p_503=0.7)
    with pytest.raises(ValueError):
        SimulatorConfig(burst_secs=0)
    with pytest.raises(SystemExit):
        config_from_argv(["--p_500", "2"])
    parser = add_arguments(argparse.ArgumentParser(), prefix="sim_")
    namespace = parser.parse_args(["--sim_rpm", "7", "--sim_tpm", "100"])
    assert SimulatorConfig.from_namespace(namespace, prefix="sim_").replace(port=0) == \
        SimulatorConfig(rpm=7, tpm=100, port=0)


def test_readme_documents_every_flag() -> None:
    readme = (REPO / "simulator" / "README.md").read_text()
    for name in flag_help():
        assert f"`--{name}`" in readme, name


def test_schema_instances_validate_for_many_seeds() -> None:
    for seed in range(50):
        value = instance_for_schema(TICKET_SCHEMA, random.Random(seed), MESSAGES)
        jsonschema.validate(value, TICKET_SCHEMA)
        assert value["ticket_id"] == "T-000123"
    assert parse_ticket(MESSAGES) == ("T-000123", "Cannot log in after password reset")


def test_latency_is_log_normal_with_configured_median_and_p99() -> None:
    simulator = Simulator(SimulatorConfig(latency_median_ms=200, latency_p99_ms=1000, seed=3,
                                          ms_per_output_token=2))
    draws = sorted(simulator.latency_secs(0) for _ in range(20000))
    assert draws[10000] == pytest.approx(0.2, rel=0.05)
    assert draws[19800] == pytest.approx(1.0, rel=0.15)
    constant = Simulator(SimulatorConfig(latency_median_ms=100, ms_per_output_token=2))
    assert constant.latency_secs(50) == pytest.approx(0.1 + 0.1)


# ---- the HTTP API through the openai client ------------------------------------------------------


def test_response_schema_and_headers(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    raw = client.chat.completions.with_raw_response.create(
        model="any-model-name", messages=MESSAGES, temperature=0.2, user="u1",
        extra_body={"some_future_field": 1})
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "any-model-name"
    assert abs(completion.created - time.time()) < 60
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert "Cannot log in after password reset" in content and "T-000123" in content
    assert 40 <= len(content.split()) <= 200
    usage = completion.usage
    assert usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert usage.completion_tokens == count_tokens(content)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    for name in (*RATE_LIMIT_HEADERS, "x-request-id"):
        assert raw.headers.get(name), name


def test_content_is_deterministic_and_varies_with_seed_and_ticket(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    first = complete(client, seed=1).choices[0].message.content
    assert complete(client, seed=1).choices[0].message.content == first
    assert complete(client, seed=2).choices[0].message.content != first
    other = [{"role": "user", "content": "Ticket ID: T-9\nSubject: Refund for double charge\n\n."}]
    other_reply = complete(client, other).choices[0].message.content
    assert "Refund for double charge" in other_reply and "T-9" in other_reply
    lengths = {len(complete(client, seed=s).choices[0].message.content.split())
               for s in range(20)}
    assert max(lengths) - min(lengths) > 30  # lengths vary realistically
    # The same request gives the same reply from a different server (no salted hash()).
    with start() as second:
        assert complete(client_for(second), seed=1).choices[0].message.content == first


def test_max_tokens_truncates_with_finish_reason_length(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    for kwargs in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        completion = complete(client, **kwargs)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens == 5
        assert len(completion.choices[0].message.content) == 20


def test_models_endpoint(sim: SimulatorHandle) -> None:
    ids = [model.id for model in client_for(sim).models.list()]
    assert {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"} <= set(ids)


def test_json_schema_and_json_object(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    fmt = {"type": "json_schema",
           "json_schema": {"name": "triage", "schema": TICKET_SCHEMA, "strict": True}}
    for seed in range(5):
        content = complete(client, response_format=fmt, seed=seed).choices[0].message.content
        jsonschema.validate(json.loads(content), TICKET_SCHEMA)
    data = json.loads(complete(client, response_format={"type": "json_object"})
                      .choices[0].message.content)
    assert isinstance(data, dict) and data["ticket_id"] == "T-000123"


def test_rpm_limit_429_with_openai_body_and_headers(make_sim: Callable[..., SimulatorHandle]
                                                    ) -> None:
    clock = FakeClock()
    handle = make_sim(rpm=2, clock=clock)
    client = client_for(handle)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.advance(1.5)
    complete(client)
    clock.advance(0.3)
    with pytest.raises(openai.RateLimitError) as caught:
        complete(client)
    error = caught.value
    assert error.status_code == 429
    assert error.body == {"message": error.body["message"], "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}
    assert "Limit 2, Used 2, Requested 1" in error.body["message"]
    assert "try again in 58.2s" in error.body["message"]
    headers = error.response.headers
    assert headers["retry-after"] == "59"
    assert headers["retry-after-ms"] == "58200"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "59.7s"
    assert headers["x-request-id"]
    assert all(name in headers for name in RATE_LIMIT_HEADERS)
    clock.advance(58.2)
    complete(client)  # the first request left the window
    stats = handle.stats()
    assert stats["rate_limited"] == 1 and stats["by_status"] == {"200": 3, "429": 1}


def test_tpm_limit_counts_prompt_plus_max_tokens(make_sim: Callable[..., SimulatorHandle]
                                                 ) -> None:
    clock = FakeClock()
    handle = make_sim(tpm=1300, clock=clock, default_max_tokens=256)
    client = client_for(handle)
    cost = prompt_tokens(MESSAGES) + 400
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES,
                                                           max_tokens=400)
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1300 - cost)
    complete(client, max_tokens=400)
    with pytest.raises(openai.RateLimitError) as caught:
        complete(client, max_tokens=400)
    assert caught.value.body["type"] == "tokens"
    assert f"Used {2 * cost}, Requested {cost}" in caught.value.body["message"]
    # Without max_tokens the default is charged: here it still fits.
    assert 1300 - 2 * cost >= prompt_tokens(MESSAGES) + 256, "test budget too small"
    complete(client)


def test_burst_secs_spreads_the_minute_budget(make_sim: Callable[..., SimulatorHandle]) -> None:
    clock = FakeClock()
    client = client_for(make_sim(rpm=120, burst_secs=1, clock=clock))
    complete(client)
    complete(client)
    with pytest.raises(openai.RateLimitError) as caught:
        complete(client)
    assert int(caught.value.response.headers["retry-after-ms"]) <= 1000
    assert "per 1s" in caught.value.body["message"]
    clock.advance(1)
    complete(client)
    # Without a burst window the whole minute's budget is available at once.
    unlimited_burst = client_for(make_sim(rpm=120, clock=FakeClock()))
    for _ in range(10):
        complete(unlimited_burst)


@pytest.mark.parametrize(("flag", "error", "status"), [
    ("p_500", openai.InternalServerError, 500),
    ("p_502", openai.InternalServerError, 502),
    ("p_503", openai.InternalServerError, 503),
])
def test_server_error_faults(make_sim: Callable[..., SimulatorHandle], flag: str,
                             error: type[Exception], status: int) -> None:
    handle = make_sim(**{flag: 1.0})
    with pytest.raises(error) as caught:
        complete(client_for(handle))
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "server_error"
    assert caught.value.response.headers["x-request-id"]
    assert handle.stats()["faults"] == {flag[2:]: 1}


def test_hang_fault_times_out_the_client(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(p_hang=1.0, hang_secs=1.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        complete(client_for(handle, timeout=0.3))
    assert time.monotonic() - started < 1.0  # gave up before the 504 could arrive
    assert handle.stats()["faults"] == {"hang": 1}


def test_reset_fault_is_a_connection_error(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(p_reset=1.0)
    with pytest.raises(openai.APIConnectionError):
        complete(client_for(handle))
    stats = handle.stats()
    assert stats["faults"] == {"reset": 1} and stats["by_status"] == {"0": 1}


def test_malformed_fault_is_a_decode_error(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(p_malformed=1.0)
    with pytest.raises(json.JSONDecodeError):
        complete(client_for(handle))
    stats = handle.stats()
    assert stats["faults"] == {"malformed": 1} and stats["by_status"] == {"200": 1}
    assert stats["successful_completions"] == 0 and stats["per_second"][0]["ok"] == 0


def test_content_filter_fault_and_marker(make_sim: Callable[..., SimulatorHandle]) -> None:
    client = client_for(make_sim(p_content_filter=1.0))
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client)
    assert caught.value.code == "content_filter"
    marker_client = client_for(make_sim())
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as caught:
            complete(marker_client, [{"role": "user", "content": "CONTENT_FILTER please"}])
        assert caught.value.code == "content_filter"
        assert_error_shape(caught.value.response.json(), "invalid_request_error",
                           "content_filter")


def test_fault_rates_near_probability_and_reproducible(make_sim: Callable[..., SimulatorHandle]
                                                       ) -> None:
    def outcomes(handle: SimulatorHandle) -> list[int]:
        client = client_for(handle)
        result = []
        for i in range(200):
            try:
                complete(client, [{"role": "user", "content": f"ticket {i}"}])
                result.append(200)
            except openai.APIStatusError as exc:
                result.append(exc.status_code)
        return result

    handle = make_sim(p_503=0.3, seed=7)
    first = outcomes(handle)
    assert 0.22 <= first.count(503) / 200 <= 0.38
    assert set(first) == {200, 503}
    assert handle.stats()["faults"] == {"503": first.count(503)}
    assert outcomes(make_sim(p_503=0.3, seed=7)) == first
    assert outcomes(make_sim(p_503=0.3, seed=8)) != first


def test_context_length_exceeded(make_sim: Callable[..., SimulatorHandle]) -> None:
    client = client_for(make_sim(context_window=100))
    complete(client)
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, [{"role": "user", "content": "x" * 400}])
    body = caught.value.response.json()["error"]
    assert body["code"] == "context_length_exceeded"
    assert body["type"] == "invalid_request_error" and body["param"] == "messages"
    assert "100 tokens" in body["message"] and "106 tokens" in body["message"]


def test_fail_n_times_marker_fails_exactly_n_attempts(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    messages = [{"role": "user", "content": f"{TICKET}\nFAIL_N_TIMES:2"}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            complete(client, messages)
        assert caught.value.status_code == 503
    assert complete(client, messages).choices[0].finish_reason == "stop"
    assert complete(client, messages).choices[0].finish_reason == "stop"
    # A different request has its own count.
    with pytest.raises(openai.InternalServerError):
        complete(client, messages, model="gpt-4o")
    sim.reset()
    with pytest.raises(openai.InternalServerError):
        complete(client, messages)
    assert sim.stats()["faults"] == {"fail_n_times": 1}


def test_invalid_output_marker(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    messages = [{"role": "user", "content": f"{TICKET}\nINVALID_OUTPUT_N_TIMES:2"}]
    fmt = {"type": "json_schema",
           "json_schema": {"name": "triage", "schema": TICKET_SCHEMA, "strict": True}}

    def valid(content: str) -> bool:
        try:
            jsonschema.validate(json.loads(content), TICKET_SCHEMA)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True

    results = [valid(complete(client, messages, response_format=fmt)
                     .choices[0].message.content) for _ in range(4)]
    assert results == [False, False, True, True]
    assert sim.stats()["faults"] == {"invalid_output": 2}


def test_api_key_required(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(api_key="sekrit")
    with pytest.raises(openai.AuthenticationError) as caught:
        complete(client_for(handle, api_key="sk-wrong-key-123"))
    assert caught.value.code == "invalid_api_key"
    assert b"sk-wrong-key-123" not in caught.value.response.content
    status, _, _ = raw_request(handle, "POST", "/v1/chat/completions",
                               json.dumps({"model": "m", "messages": MESSAGES}).encode())
    assert status == 401
    complete(client_for(handle, api_key="sekrit"))


def test_max_concurrency_overload(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(max_concurrency=1, latency_median_ms=400)
    results: list[Any] = []

    def call() -> None:
        try:
            results.append(complete(client_for(handle)))
        except openai.APIStatusError as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    errors = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(results) == 2 and len(errors) == 1
    assert errors[0].status_code == 503 and errors[0].code == "overloaded"
    assert handle.stats()["peak_concurrency"] == 2


def test_stats_and_reset(make_sim: Callable[..., SimulatorHandle]) -> None:
    handle = make_sim(rpm=2, clock=FakeClock())
    client = client_for(handle)
    replies = [complete(client), complete(client)]
    with pytest.raises(openai.RateLimitError):
        complete(client)
    status, _, body = raw_request(handle, "GET", "/stats")
    stats = json.loads(body)
    assert status == 200 and stats == handle.stats()
    assert stats["requests"] == 3 and stats["successful_completions"] == 2
    assert stats["by_status"] == {"200": 2, "429": 1} and stats["rate_limited"] == 1
    assert stats["prompt_tokens"] == sum(r.usage.prompt_tokens for r in replies)
    assert stats["completion_tokens"] == sum(r.usage.completion_tokens for r in replies)
    assert stats["in_flight"] == 0 and stats["peak_concurrency"] == 1
    assert stats["per_second"] == [{"t": 0, "requests": 3, "ok": 2, "rate_limited": 1}]
    assert isinstance(stats["started_at"], float) and stats["faults"] == {}
    status, _, body = raw_request(handle, "POST", "/reset")
    assert status == 200 and json.loads(body) == {"ok": True}
    stats = handle.stats()
    assert stats["requests"] == 0 and stats["by_status"] == {} and stats["per_second"] == []
    complete(client)  # the rate-limit window was emptied too
    handle.reset()
    assert handle.stats()["requests"] == 0


@pytest.mark.parametrize(("body", "code"), [
    (b"not json", None),
    (b"{\"model\": ", None),
    (b"[1, 2]", "invalid_type"),
    (b"\"text\"", "invalid_type"),
    (b"[" * 100000, None),
    (json.dumps({"model": "m"}).encode(), "missing_required_parameter"),
    (json.dumps({"messages": MESSAGES}).encode(), "missing_required_parameter"),
    (json.dumps({"model": "m", "messages": "hi"}).encode(), "invalid_type"),
    (json.dumps({"model": "m", "messages": []}).encode(), "empty_array"),
    (json.dumps({"model": "m", "messages": ["hi"]}).encode(), "invalid_type"),
    (json.dumps({"model": "m", "messages": [{"content": "hi"}]}).encode(), "invalid_value"),
    (json.dumps({"model": "m", "messages": [{"role": "user"}]}).encode(),
     "missing_required_parameter"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": 5}]}).encode(),
     "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": "10"}).encode(),
     "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": True}).encode(),
     "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 0}).encode(),
     "integer_below_min_value"),
    (json.dumps({"model": "m", "messages": MESSAGES, "temperature": "hot"}).encode(),
     "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES, "seed": 1.5}).encode(), "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode(),
     "unsupported_value"),
    (json.dumps({"model": "m", "messages": MESSAGES, "response_format": "json"}).encode(),
     "invalid_type"),
    (json.dumps({"model": "m", "messages": MESSAGES,
                 "response_format": {"type": "json_schema"}}).encode(),
     "missing_required_parameter"),
    (json.dumps({"model": "m", "messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nope"}}}}
                ).encode(), "invalid_json_schema"),
    (json.dumps({"model": "m", "messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "array", "minItems": 10**9}}}}).encode(), "invalid_json_schema"),
])
def test_bad_requests_get_400(sim: SimulatorHandle, body: bytes, code: str | None) -> None:
    status, headers, raw = raw_request(sim, "POST", "/v1/chat/completions", body,
                                       {"Content-Type": "application/json"})
    assert status == 400, raw
    assert_error_shape(json.loads(raw), "invalid_request_error", code)
    assert headers["x-request-id"] and "x-ratelimit-limit-requests" in headers
    assert complete(client_for(sim)).choices[0].finish_reason == "stop"  # still serving


def test_unknown_url_gets_openai_404_and_is_counted(sim: SimulatorHandle) -> None:
    status, _, raw = raw_request(sim, "GET", "/v1/chat/completions")
    assert status == 404
    body = json.loads(raw)
    assert_error_shape(body, "invalid_request_error", None)
    assert body["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"
    wrong = openai.OpenAI(base_url=sim.base_url.replace("/v1", "/nope/v1"), api_key="test",
                          max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        complete(wrong)
    assert caught.value.code is None and "POST /nope/v1/chat/completions" in caught.value.message
    stats = sim.stats()
    assert stats["unknown_urls"] == 2 and stats["requests"] == 0


def test_models_flag_serves_only_those_models(make_sim: Callable[..., SimulatorHandle]) -> None:
    client = client_for(make_sim(models="gpt-4o-mini, served-2"))
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "served-2"]
    assert client.models.retrieve("served-2").id == "served-2"
    assert complete(client, model="served-2").model == "served-2"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-5-typo")
    assert caught.value.code == "model_not_found" and "gpt-5-typo" in caught.value.message
    with pytest.raises(openai.NotFoundError) as caught:
        complete(client, model="gpt-5-typo")
    assert caught.value.code == "model_not_found" and "gpt-5-typo" in caught.value.message
    # Without --models, any name is served.
    assert client_for(make_sim()).models.retrieve("anything").id == "anything"


def test_not_found_marker_is_a_404_for_that_request_only(sim: SimulatorHandle) -> None:
    client = client_for(sim)
    with pytest.raises(openai.NotFoundError) as caught:
        complete(client, [{"role": "user", "content": "see NOT_FOUND"}])
    assert caught.value.code is None
    assert complete(client).choices[0].finish_reason == "stop"
    stats = sim.stats()
    assert stats["by_status"] == {"200": 1, "404": 1} and stats["faults"] == {"not_found": 1}


def test_unexpected_exception_becomes_counted_500() -> None:
    class BrokenSimulator(Simulator):
        """A fake whose content generation fails the way a bug would."""

        def _content(self, chat: Any) -> tuple[str, str]:
            raise RuntimeError("bug")

    async def scenario() -> tuple[int, Any, dict[str, Any]]:
        simulator = BrokenSimulator(SimulatorConfig(port=0))
        runner, port = await _start_site(simulator)
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with aiohttp.ClientSession() as session, \
                    session.post(url, json={"model": "m", "messages": MESSAGES}) as response:
                return response.status, await response.json(), simulator.stats.snapshot()
        finally:
            await runner.cleanup()

    status, body, stats = asyncio.run(scenario())
    assert status == 500
    assert_error_shape(body, "server_error", None)
    assert stats["by_status"] == {"500": 1} and stats["faults"] == {"internal_error": 1}


def test_latency_delays_responses(make_sim: Callable[..., SimulatorHandle]) -> None:
    client = client_for(make_sim(latency_median_ms=150))
    started = time.monotonic()
    complete(client)
    assert time.monotonic() - started >= 0.14


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_first_line_and_exits_cleanly(stop_signal: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--rpm", "60",
                                "--seed", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(1), api_key="test", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "60"
        process.send_signal(stop_signal)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in process.stderr.read()
