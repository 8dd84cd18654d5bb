"""Tests of the simulator's Anthropic Messages API, through the official ``anthropic`` client.

In-process servers come from the ``simulator_factory`` fixture (port 0). Tests of limits and of
the prompt cache's TTLs give the simulator a fake clock, so they move time instead of sleeping.
The client's base URL is the server's root: the SDK appends ``/v1/messages`` itself.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import math
from typing import Any

import anthropic
import jsonschema
import pytest

from simulator import SimulatorHandle, config_from_argv
from simulator.buckets import MessagesLimiter, rfc3339
from simulator.prompt_cache import Block, PromptCache, minimum_cacheable_tokens
from simulator.tokens import count_tokens, messages_api_tokens, prompt_tokens

MODEL = "claude-sonnet-4-6"
TICKET = ("Ticket ID: T-000123\nSubject: Cannot log in after password reset\n\n"
          "I reset my password yesterday and now the app says my password is wrong.")
MESSAGES = [{"role": "user", "content": TICKET}]
SYSTEM = "You are a support agent."
# A system prompt long enough to be cached by every model (over 2048 tokens).
POLICY = "\n".join(f"Policy {i}: answer politely, quote the ticket id, never promise refunds "
                   f"without a manager's approval, and close with the team's signature."
                   for i in range(80))
TRIAGE = {
    "name": "triage",
    "description": "Record the triage of a ticket.",
    "input_schema": {
        "type": "object",
        "properties": {
            "ticket_id": {"type": "string"},
            "category": {"type": "string", "enum": ["account", "billing", "technical"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": {"type": "string", "minLength": 5, "maxLength": 60},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["ticket_id", "category", "priority", "summary", "tags"],
        "additionalProperties": False,
    },
}
LIMIT_KINDS = ("requests", "input-tokens", "output-tokens", "tokens")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def client_for(sim: SimulatorHandle, api_key: str = "test", **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.root_url, api_key=api_key, max_retries=0, timeout=10,
                               **kwargs)


def create(client: anthropic.Anthropic, messages: list[dict[str, Any]] | None = None,
           **kwargs: Any) -> Any:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("max_tokens", 512)
    return client.messages.create(messages=messages or MESSAGES, **kwargs)


def create_raw(client: anthropic.Anthropic, **kwargs: Any) -> tuple[Any, Any]:
    """(message, response headers) of one ``messages.create``."""
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("max_tokens", 512)
    kwargs.setdefault("messages", MESSAGES)
    raw = client.messages.with_raw_response.create(**kwargs)
    return raw.parse(), raw.headers


def raw_request(sim: SimulatorHandle, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                json.loads(data) if data else None)
    finally:
        conn.close()


def assert_anthropic_error(body: Any, error_type: str) -> None:
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type and body["error"]["message"]
    assert body["request_id"].startswith("req_")


# ---- pure parts ---------------------------------------------------------------------------------


def test_messages_api_tokens_match_the_openai_count() -> None:
    openai_messages = [{"role": "system", "content": SYSTEM}, *MESSAGES]
    assert messages_api_tokens(MESSAGES, system=SYSTEM) == prompt_tokens(openai_messages)
    blocks = [{"role": "user", "content": [{"type": "text", "text": TICKET,
                                            "cache_control": {"type": "ephemeral"}}]}]
    assert messages_api_tokens(blocks, system=[{"type": "text", "text": SYSTEM}]) == \
        prompt_tokens(openai_messages)
    assert messages_api_tokens(MESSAGES, tools=[TRIAGE]) > messages_api_tokens(MESSAGES)


def test_buckets_refill_continuously_and_settle_output() -> None:
    clock = FakeClock()
    limiter = MessagesLimiter(rpm=60, itpm=1000, otpm=600, clock=clock)
    assert limiter.acquire(input_tokens=400, output_tokens=500).allowed
    rejected = limiter.acquire(input_tokens=400, output_tokens=500)
    # Output is charged at max_tokens: 100 left, 400 missing at 10 tokens per second.
    assert not rejected.allowed and rejected.kind == "output_tokens"
    assert rejected.retry_after == pytest.approx(40)
    limiter.settle_output(reserved=500, used=120)  # 380 come back at once
    assert limiter.acquire(input_tokens=400, output_tokens=480).allowed
    assert limiter.acquire(input_tokens=400, output_tokens=1).kind == "input_tokens"
    assert limiter.acquire(input_tokens=0, output_tokens=601).retry_after == math.inf
    clock.advance(6.0)  # 1 request, 100 input tokens and 60 output tokens refilled
    headers = limiter.headers(wall_now=0.0)
    assert headers["anthropic-ratelimit-requests-remaining"] == "60"  # 58 + 6, capped
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "300"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "60"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "60"  # the more restrictive
    # Full again when the 540 missing output tokens have refilled: 54 s from now.
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "1970-01-01T00:00:54Z"
    assert rfc3339(0.2) == "1970-01-01T00:00:01Z" and rfc3339(60) == "1970-01-01T00:01:00Z"
    unlimited = MessagesLimiter(clock=clock).headers(wall_now=0.0)
    assert unlimited["anthropic-ratelimit-requests-limit"] == "1000000000"


def test_prompt_cache_plan_lookback_minimum_and_ttl() -> None:
    clock = FakeClock()
    cache = PromptCache(clock)
    assert minimum_cacheable_tokens("claude-haiku-4-5") == 2048
    assert minimum_cacheable_tokens(MODEL) == 1024
    blocks = [Block(b"system", 1500, 3600.0), Block(b"user-1", 100, 300.0)]
    plan = cache.plan(MODEL, blocks)
    assert (plan.read_tokens, plan.write_1h_tokens, plan.write_5m_tokens) == (0, 1500, 100)
    assert cache.plan(MODEL, blocks) == plan  # planning changes nothing
    cache.commit(plan)
    # A later turn: its breakpoint moved on, the old one is found by the lookback.
    longer = [Block(b"system", 1500, 3600.0), Block(b"user-1", 100), Block(b"assistant", 50),
              Block(b"user-2", 70, 300.0)]
    plan = cache.plan(MODEL, longer)
    assert (plan.read_tokens, plan.creation_tokens) == (1600, 120)
    assert cache.plan("claude-opus-4-6", longer).read_tokens == 0  # entries are per model
    assert cache.plan("claude-haiku-4-5", blocks).creation_tokens == 0  # under Haiku's 2048
    clock.advance(301)  # the 5-minute entry expired, the 1-hour one did not
    assert cache.plan(MODEL, longer).read_tokens == 1500


# ---- the HTTP API through the anthropic client --------------------------------------------------


def test_text_answer_usage_and_headers(simulator_factory) -> None:
    sim = simulator_factory(seed=1)
    message, headers = create_raw(client_for(sim), system=SYSTEM)
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert len(message.content) == 1 and message.content[0].type == "text"
    text = message.content[0].text
    assert "T-000123" in text and "Cannot log in after password reset" in text
    usage = message.usage
    assert usage.input_tokens == messages_api_tokens(MESSAGES, system=SYSTEM)
    assert usage.output_tokens == count_tokens(text)
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert headers["request-id"].startswith("req_")
    for kind in LIMIT_KINDS:  # unlimited, but announced
        assert headers[f"anthropic-ratelimit-{kind}-limit"] == "1000000000"
    again = create(client_for(sim), system=SYSTEM)
    assert again.content[0].text == text and again.id != message.id  # deterministic content
    short = create(client_for(sim), max_tokens=5)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 5
    stats = sim.stats()
    assert stats["anthropic_requests"] == stats["successful_completions"] == 3
    assert stats["prompt_tokens"] == 2 * usage.input_tokens + short.usage.input_tokens


def test_forced_tool_answer_and_json_output(simulator_factory) -> None:
    client = client_for(simulator_factory())
    message = create(client, tools=[TRIAGE], tool_choice={"type": "tool", "name": "triage"})
    assert message.stop_reason == "tool_use" and len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "triage" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, TRIAGE["input_schema"])
    assert block.input["ticket_id"] == "T-000123"
    assert message.usage.input_tokens == messages_api_tokens(MESSAGES, tools=[TRIAGE])
    assert message.usage.output_tokens == count_tokens(json.dumps(block.input))
    anyone = create(client, tools=[TRIAGE], tool_choice={"type": "any"})
    assert anyone.content[0].input == block.input
    assert create(client, tools=[TRIAGE]).content[0].type == "text"  # auto: the simulator writes
    schema = TRIAGE["input_schema"]
    structured = create(client, output_config={"format": {"type": "json_schema",
                                                          "schema": schema}})
    jsonschema.validate(json.loads(structured.content[0].text), schema)
    cut = create(client, max_tokens=3, tools=[TRIAGE], tool_choice={"type": "any"})
    assert cut.stop_reason == "max_tokens" and cut.content[0].input == {}


def test_prompt_cache_written_then_read_and_reads_are_not_charged(simulator_factory) -> None:
    clock = FakeClock()
    sim = simulator_factory(anthropic_itpm=100_000, clock=clock)
    client = client_for(sim)
    system = [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}]
    prefix = count_tokens(POLICY) + 3  # the system prompt counts as one more message
    assert prefix >= 2048
    total = messages_api_tokens(MESSAGES, system=system)
    first, headers = create_raw(client, system=system)
    usage = first.usage
    assert usage.cache_creation_input_tokens == usage.cache_creation.ephemeral_5m_input_tokens \
        == prefix
    assert usage.cache_read_input_tokens == 0 and usage.input_tokens == total - prefix
    remaining = 100_000 - total  # a cache write is charged like any input
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == str(remaining)

    other = [{"role": "user", "content": "Ticket ID: T-000999\nSubject: Refund"}]
    second, headers = create_raw(client, system=system, messages=other)
    usage = second.usage
    assert usage.cache_read_input_tokens == prefix and usage.cache_creation_input_tokens == 0
    assert usage.input_tokens == messages_api_tokens(other, system=system) - prefix
    # The cache read is not charged to the input-token bucket: only the uncached rest is.
    remaining -= usage.input_tokens
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == str(remaining)

    # Each hit restarts the 5-minute TTL; 5 minutes without one and the prefix is written again.
    clock.advance(299)
    assert create(client, system=system).usage.cache_read_input_tokens == prefix
    clock.advance(299)
    assert create(client, system=system).usage.cache_read_input_tokens == prefix
    clock.advance(301)
    assert create(client, system=system).usage.cache_creation_input_tokens == prefix
    stats = sim.stats()
    assert stats["cache_creation_input_tokens"] == 2 * prefix
    assert stats["cache_read_input_tokens"] == 3 * prefix
    sim.reset()  # forgets the cache
    assert create(client, system=system).usage.cache_creation_input_tokens == prefix


def test_prompt_cache_conversation_ttls_and_minimum(simulator_factory) -> None:
    client = client_for(simulator_factory())
    system = [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    turn = [{"role": "user", "content": [{"type": "text", "text": TICKET,
                                          "cache_control": {"type": "ephemeral"}}]}]
    usage = create(client, system=system, messages=turn).usage
    prefix = count_tokens(POLICY) + 3
    assert usage.cache_creation.ephemeral_1h_input_tokens == prefix
    assert usage.cache_creation.ephemeral_5m_input_tokens == count_tokens(TICKET) + 3
    # The next turn moves the breakpoint on; the last one is found by the lookback.
    follow_up = [{"role": "user", "content": TICKET}, {"role": "assistant", "content": "On it."},
                 {"role": "user", "content": "Any news?"}]
    usage = create(client, system=system, messages=follow_up,
                   cache_control={"type": "ephemeral"}).usage  # top level: the last block
    assert usage.cache_read_input_tokens == prefix + count_tokens(TICKET) + 3
    assert usage.cache_creation_input_tokens == (3 + count_tokens("On it.")
                                                 + 3 + count_tokens("Any news?"))
    assert usage.input_tokens == 3
    # Too short for Haiku (2048) but not for Sonnet (1024): never cached.
    half = [{"type": "text", "text": POLICY[:len(POLICY) * 2 // 5],
             "cache_control": {"type": "ephemeral"}}]
    assert 1024 < count_tokens(half[0]["text"]) < 2048
    for _ in range(2):
        usage = create(client, system=half, model="claude-haiku-4-5").usage
        assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
    assert create(client, system=half).usage.cache_creation_input_tokens > 0


def test_rate_limit_429_with_retry_after_and_headers(simulator_factory) -> None:
    clock = FakeClock()
    sim = simulator_factory(anthropic_rpm=2, anthropic_otpm=1000, clock=clock)
    client = client_for(sim)
    message, headers = create_raw(client, max_tokens=1000)
    used = message.usage.output_tokens
    assert headers["anthropic-ratelimit-requests-remaining"] == "1"
    # Output was charged at max_tokens, then settled to what was produced.
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - used)
    assert headers["anthropic-ratelimit-tokens-remaining"] == str(1000 - used)
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client, max_tokens=1000)
    error = caught.value
    assert error.status_code == 429 and error.type == "rate_limit_error"
    assert_anthropic_error(error.body, "rate_limit_error")
    assert "output tokens per minute" in error.body["error"]["message"]
    # 1000 per minute refill 16.67 per second; `used` of them are missing.
    assert error.response.headers["retry-after"] == str(math.ceil(used / (1000 / 60)))
    assert error.request_id == error.response.headers["request-id"]
    create(client, max_tokens=10)  # a smaller request fits: the second request of the minute
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client, max_tokens=10)
    assert "requests per minute" in caught.value.body["error"]["message"]
    assert caught.value.response.headers["retry-after"] == "30"  # 2 per minute: one per 30 s
    clock.advance(30)
    create(client, max_tokens=10)
    stats = sim.stats()
    assert stats["rate_limited"] == 2 and stats["by_status"] == {"200": 3, "429": 2}
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client, max_tokens=1001)  # more than the bucket holds: never served
    assert "can never be served" in caught.value.body["error"]["message"]


def test_reset_headers_are_rfc3339_and_consistent(simulator_factory) -> None:
    sim = simulator_factory(anthropic_rpm=60, anthropic_itpm=10_000, anthropic_otpm=2_000)
    client = client_for(sim)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    message, headers = create_raw(client, system=SYSTEM)
    after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=61)
    for kind in LIMIT_KINDS:
        reset = datetime.datetime.fromisoformat(
            headers[f"anthropic-ratelimit-{kind}-reset"].replace("Z", "+00:00"))
        assert before <= reset <= after, kind
        assert int(headers[f"anthropic-ratelimit-{kind}-remaining"]) <= \
            int(headers[f"anthropic-ratelimit-{kind}-limit"])
    assert headers["anthropic-ratelimit-requests-remaining"] == "59"  # 1 per second refills
    assert int(headers["anthropic-ratelimit-input-tokens-remaining"]) >= \
        10_000 - message.usage.input_tokens
    assert headers["anthropic-ratelimit-tokens-limit"] == "2000"  # output is the tighter one


def test_overloaded_529_and_other_faults(simulator_factory) -> None:
    client = client_for(simulator_factory(p_503=1.0))
    with pytest.raises(anthropic.OverloadedError) as caught:
        create(client)
    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert_anthropic_error(caught.value.body, "overloaded_error")

    sim = simulator_factory()
    client = client_for(sim)
    marked = [{"role": "user", "content": f"{TICKET}\nFAIL_N_TIMES:1"}]
    with pytest.raises(anthropic.OverloadedError):
        create(client, messages=marked)
    assert create(client, messages=marked).stop_reason == "end_turn"
    refused = create(client, messages=[{"role": "user", "content": "CONTENT_FILTER"}])
    assert refused.stop_reason == "refusal" and refused.content == []
    with pytest.raises(anthropic.NotFoundError):
        create(client, messages=[{"role": "user", "content": "NOT_FOUND"}])
    assert sim.stats()["faults"] == {"content_filter": 1, "fail_n_times": 1, "not_found": 1}
    with pytest.raises(anthropic.InternalServerError) as caught:
        create(client_for(simulator_factory(p_500=1.0)))
    assert caught.value.status_code == 500 and caught.value.type == "api_error"


def test_version_header_and_api_key(simulator_factory) -> None:
    sim = simulator_factory(api_key="secret")
    without_version = client_for(sim, api_key="secret",
                                 default_headers={"anthropic-version": anthropic.omit})
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(without_version)
    assert caught.value.status_code == 400
    assert_anthropic_error(caught.value.body, "invalid_request_error")
    assert caught.value.body["error"]["message"] == "anthropic-version: header is required"
    status, _, body = raw_request(sim, "POST", "/v1/messages", {"model": MODEL},
                                  {"x-api-key": "secret", "anthropic-version": "latest"})
    assert status == 400 and "is not a valid version" in body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as caught:
        create(client_for(sim, api_key="wrong"))
    assert caught.value.body["error"] == {"type": "authentication_error",
                                          "message": "invalid x-api-key"}
    status, _, body = raw_request(sim, "POST", "/v1/messages", {},
                                  {"anthropic-version": "2023-06-01"})
    assert status == 401 and body["error"]["message"] == "x-api-key header is required"
    # The SDK sends its key as a Bearer token; Anthropic's own header works as well.
    assert create(client_for(sim, api_key="secret")).stop_reason == "end_turn"
    status, _, body = raw_request(sim, "POST", "/v1/messages",
                                  {"model": MODEL, "max_tokens": 10, "messages": MESSAGES},
                                  {"x-api-key": "secret", "anthropic-version": "2023-06-01"})
    assert status == 200 and body["type"] == "message"


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": MESSAGES, "max_tokens": 10}, "model: Field required"),
    ({"model": MODEL, "messages": MESSAGES}, "max_tokens: Field required"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 0}, "max_tokens: Input should be"),
    ({"model": MODEL, "messages": [], "max_tokens": 10}, "at least one message"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "x"}], "max_tokens": 10},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 10, "response_format": {}},
     "response_format: Extra inputs are not permitted"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 10, "temperature": 1.5},
     "temperature"),
    ({"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x",
                                      "cache_control": {"type": "ephemeral"}}] * 5}]},
     "A maximum of 4 blocks with cache_control"),
    ({"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "y", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]},
     "must not come after a ttl='5m'"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 10,
      "tool_choice": {"type": "tool", "name": "triage"}}, "tool_choice"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 10, "tools": [TRIAGE],
      "tool_choice": {"type": "tool", "name": "other"}}, "Tool 'other' not found"),
])
def test_bad_requests_get_anthropic_400(simulator_factory, body: dict, message: str) -> None:
    sim = simulator_factory()
    status, _, answer = raw_request(sim, "POST", "/v1/messages", body,
                                    {"anthropic-version": "2023-06-01"})
    assert status == 400
    assert_anthropic_error(answer, "invalid_request_error")
    assert message in answer["error"]["message"]
    status, _, answer = raw_request(sim, "POST", "/v1/messages", b"{not json",
                                    {"anthropic-version": "2023-06-01"})
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"


def test_models_count_tokens_and_unknown_paths(simulator_factory) -> None:
    sim = simulator_factory(models="claude-haiku-4-5,gpt-4o-mini")
    client = client_for(sim)
    page = client.models.list()
    assert [m.id for m in page.data] == ["claude-haiku-4-5", "gpt-4o-mini"]
    assert page.data[0].display_name == "Claude Haiku 4.5" and page.data[0].type == "model"
    assert client.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-opus-4-6")
    with pytest.raises(anthropic.NotFoundError) as caught:
        create(client)  # the Sonnet model is not served
    assert caught.value.body["error"]["message"] == f"model: {MODEL}"
    # Without anthropic-version, the same path answers in OpenAI's shape.
    status, _, body = raw_request(sim, "GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    count = client.messages.count_tokens(model="claude-haiku-4-5", messages=MESSAGES,
                                         system=SYSTEM)
    assert count.input_tokens == messages_api_tokens(MESSAGES, system=SYSTEM)
    wrong_base = anthropic.Anthropic(base_url=sim.base_url, api_key="test", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:  # /v1/v1/messages
        create(wrong_base, model="claude-haiku-4-5")
    assert_anthropic_error(caught.value.body, "not_found_error")
    assert sim.stats()["unknown_urls"] == 1


def test_async_client_concurrent_messages(simulator_factory) -> None:
    sim = simulator_factory(anthropic_rpm=600, latency_median_ms=200)

    async def main() -> list[Any]:
        async with anthropic.AsyncAnthropic(base_url=sim.root_url, api_key="test",
                                            max_retries=0, timeout=10) as client:
            return await asyncio.gather(*(
                client.messages.create(model=MODEL, max_tokens=256, messages=[
                    {"role": "user", "content": f"Ticket ID: T-{i}\nSubject: Refund {i}"}])
                for i in range(8)))

    messages = asyncio.run(main())
    assert [f"T-{i}" in m.content[0].text for i, m in enumerate(messages)] == [True] * 8
    stats = sim.stats()
    assert stats["anthropic_requests"] == 8 and stats["peak_concurrency"] > 1  # concurrent
    assert stats["completion_tokens"] == sum(m.usage.output_tokens for m in messages)


def test_anthropic_flags() -> None:
    config = config_from_argv(["--anthropic_rpm", "50", "--anthropic_itpm", "40000",
                               "--anthropic_otpm", "8000"])
    assert (config.anthropic_rpm, config.anthropic_itpm, config.anthropic_otpm) == \
        (50, 40_000, 8_000)
    with pytest.raises(SystemExit):
        config_from_argv(["--anthropic_otpm", "-1"])
