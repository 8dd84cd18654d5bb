"""The Anthropic wire format (transforms/llm/providers/anthropic.py) and --provider."""

from __future__ import annotations

import json

import pytest

from transforms import errors
from transforms.llm.providers import provider_caller, provider_of
from transforms.llm.providers.anthropic import (ANSWER_TOOL, AnthropicCaller, error_for,
                                                limit_headers, messages_body, parse_message)
from transforms.llm.config import LlmConfig

CHAT = {"model": "claude-haiku-4-5", "max_tokens": 200, "temperature": 1.5,
        "messages": [{"role": "system", "content": "You triage tickets."},
                     {"role": "user", "content": "Refund please"}]}


def test_the_system_prompt_is_the_cached_prefix():
    body = messages_body(CHAT)
    assert body["messages"] == [{"role": "user", "content": "Refund please"}]
    assert body["system"] == [{"type": "text", "text": "You triage tickets.",
                               "cache_control": {"type": "ephemeral"}}]
    assert body["max_tokens"] == 200 and body["temperature"] == 1.0  # Anthropic's range
    assert messages_body(CHAT, cache_ttl="1h")["system"][0]["cache_control"] == {
        "type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in messages_body(CHAT, cache=False)["system"][0]


def test_a_schema_answer_is_a_forced_tool():
    schema = {"type": "object", "properties": {"queue": {"type": "string"}}}
    body = messages_body({**CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "triage", "schema": schema}}})
    assert body["tools"] == [{"name": ANSWER_TOOL, "description": "Give the answer.",
                              "input_schema": schema}]
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    answer = parse_message(json.dumps({
        "type": "message", "model": "claude-haiku-4-5", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "name": ANSWER_TOOL, "input": {"queue": "billing"}}],
        "usage": {"input_tokens": 10, "output_tokens": 5}}).encode())
    assert json.loads(answer.content) == {"queue": "billing"} and answer.finish_reason == "stop"


def test_usage_counts_every_input_token_and_the_cache_reads():
    answer = parse_message(json.dumps({
        "type": "message", "model": "claude-haiku-4-5", "stop_reason": "max_tokens",
        "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
        "usage": {"input_tokens": 12, "output_tokens": 200, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 1500}}).encode(), request_id="req_1")
    assert answer.content == "Hello there" and answer.finish_reason == "length"
    assert answer.prompt_tokens == 1512 and answer.cached_tokens == 1500
    assert answer.completion_tokens == 200 and answer.request_id == "req_1"
    with pytest.raises(ValueError):
        parse_message(b'{"type": "error"}')


@pytest.mark.parametrize("status, kind, message, expected", [
    (429, "rate_limit_error", "slow down", errors.RateLimited),
    (529, "overloaded_error", "Overloaded", errors.ServerError),
    (500, "api_error", "boom", errors.ServerError),
    (401, "authentication_error", "invalid x-api-key", errors.AuthFailed),
    (404, "not_found_error", "model: claude-nope", errors.ModelNotFound),
    (404, "not_found_error", "Not Found", errors.NotFound),
    (400, "invalid_request_error", "prompt is too long: 300000 tokens",
     errors.ContextLengthExceeded),
    (400, "invalid_request_error", "messages: field required", errors.BadRequest),
])
def test_errors_map_onto_ours(status, kind, message, expected):
    assert error_for(status, kind, message) is expected


def test_limit_headers_become_announced_limits():
    headers = {"anthropic-ratelimit-requests-limit": "50",
               "anthropic-ratelimit-requests-remaining": "49",
               "anthropic-ratelimit-requests-reset": "2026-12-06T00:00:01Z",
               "anthropic-ratelimit-input-tokens-limit": "50000",
               "anthropic-ratelimit-input-tokens-remaining": "48000"}
    now = 1796515200.0  # 2026-12-06T00:00:00Z
    limits = limit_headers(headers, now=now)
    assert limits["requests"].limit == 50 and limits["requests"].remaining == 49
    assert limits["requests"].reset_secs == pytest.approx(1.0)
    assert limits["tokens"].limit == 50000 and limits["tokens"].reset_secs is None
    assert limit_headers({}) == {}


def test_provider_comes_from_the_model_name_unless_given():
    assert provider_of("claude-sonnet-4-5") == "anthropic"
    assert provider_of("gemini-2.5-flash") == "gemini"
    assert provider_of("gpt-4o-mini") == "openai"
    assert provider_of("claude-haiku-4-5", "openai") == "openai"
    caller = provider_caller(LlmConfig(base_url=None, model="claude-haiku-4-5",
                                       provider="anthropic"), "k")
    assert isinstance(caller, AnthropicCaller)


def test_provider_flag_mistakes_and_key_env(run_pipeline, tmp_path):
    ticket = tmp_path / "t.jsonl"
    ticket.write_text('{"id": "1", "body": "x"}\n')
    run = run_pipeline("--input", str(ticket), "--model", "gemini-2.5-flash")
    assert run.returncode == 2 and "GEMINI_API_KEY or GOOGLE_API_KEY" in run.stderr
    run = run_pipeline("--input", str(ticket), "--model", "claude-haiku-4-5")
    assert run.returncode == 2 and "ANTHROPIC_API_KEY" in run.stderr


def test_a_job_on_anthropic_reads_its_cached_system_prompt(run_pipeline, simulator_factory,
                                                           tmp_path):
    sim = simulator_factory()
    ticket_file = tmp_path / "t.jsonl"
    ticket_file.write_text("".join(json.dumps({"id": f"A-{i}", "body": f"Order {i} broke."}) + "\n"
                                   for i in range(12)))
    manual = tmp_path / "system.txt"  # a long policy manual: over Haiku's 2048-token minimum
    manual.write_text("You triage support tickets by our refund policy. " * 400)
    common = ["--input", str(ticket_file), "--base_url", sim.base_url, "--model",
              "claude-haiku-4-5", "--system_prompt", f"@{manual}", "--max_concurrency", "1"]
    run = run_pipeline(*common, env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 12 and summary["ledger_balanced"] is True
    stats = sim.stats()
    assert stats["anthropic_requests"] == 12
    assert stats["cache_creation_input_tokens"] > 2048  # written once...
    assert stats["cache_read_input_tokens"] >= 11 * 2048  # ...read by the other eleven
    assert "sk-ant-test" not in run.stderr + run.stdout

    sim.reset()
    off = run_pipeline(*common, "--prompt_cache", "off", env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert off.returncode == 0, off.stderr
    assert sim.stats()["cache_read_input_tokens"] == 0
    assert off.summary()["cost_usd"] > summary["cost_usd"]  # cache reads at a tenth
