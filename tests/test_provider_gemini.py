"""The Gemini wire format (transforms/llm/providers/gemini.py), its simulator, and --provider."""

from __future__ import annotations

import asyncio
import json

import pytest

from transforms import errors
from transforms.llm.config import LlmConfig
from transforms.llm.providers import provider_caller
from transforms.llm.providers.gemini import (GeminiCaller, error_for, error_from_body,
                                             generate_body, parse_response, response_schema)

CHAT = {"model": "gemini-2.5-flash", "max_tokens": 200, "temperature": 0.4,
        "messages": [{"role": "system", "content": "You triage tickets."},
                     {"role": "user", "content": "Refund please"},
                     {"role": "assistant", "content": "Which order?"},
                     {"role": "user", "content": "Order 7"}]}
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["queue", "note"],
          "properties": {"queue": {"type": "string", "enum": ["billing", "tech"]},
                         "note": {"type": ["string", "null"]},
                         "tags": {"type": "array", "items": {"type": "string"}}}}
MANUAL = "You triage support tickets by our refund policy. " * 200  # ~2,500 tokens


def _answer(**fields) -> bytes:
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello "},
                                                                   {"text": "there"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1500, "candidatesTokenCount": 20,
                              "cachedContentTokenCount": 1024, "totalTokenCount": 1520},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    body.update(fields)
    return json.dumps(body).encode()


def test_the_system_prompt_is_the_instruction_and_the_static_prefix():
    body = generate_body(CHAT)
    assert body["systemInstruction"] == {"parts": [{"text": "You triage tickets."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0] == {"role": "user", "parts": [{"text": "Refund please"}]}
    assert body["generationConfig"] == {"maxOutputTokens": 200, "temperature": 0.4}


def test_a_schema_answer_is_json_with_a_response_schema():
    body = generate_body({**CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "triage", "schema": SCHEMA}}})
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema == response_schema(SCHEMA)
    assert schema["type"] == "OBJECT" and "additionalProperties" not in schema
    assert schema["propertyOrdering"] == ["queue", "note", "tags"]
    assert schema["properties"]["queue"] == {"type": "STRING", "enum": ["billing", "tech"]}
    assert schema["properties"]["note"] == {"type": "STRING", "nullable": True}
    assert schema["properties"]["tags"]["items"] == {"type": "STRING"}


def test_the_answer_its_finish_reason_and_usage_with_cached_tokens():
    answer = parse_response(_answer())
    assert answer.content == "Hello there" and answer.finish_reason == "stop"
    assert answer.prompt_tokens == 1500 and answer.cached_tokens == 1024
    assert answer.completion_tokens == 20 and answer.request_id == "r1"
    cut = parse_response(_answer(candidates=[{"content": {"parts": [{"text": "Hel"}]},
                                              "finishReason": "MAX_TOKENS"}]))
    assert cut.finish_reason == "length"
    blocked = parse_response(_answer(candidates=[], promptFeedback={"blockReason": "SAFETY"}))
    assert blocked.content == "" and blocked.finish_reason == "content_filter"
    assert not parse_response(_answer(usageMetadata=None)).usage_known
    with pytest.raises(ValueError):
        parse_response(b'{"candidates": []}')


@pytest.mark.parametrize("status, code, message, expected", [
    (429, "RESOURCE_EXHAUSTED", "Quota exceeded", errors.RateLimited),
    (503, "UNAVAILABLE", "The model is overloaded.", errors.ServerError),
    (500, "INTERNAL", "An internal error has occurred.", errors.ServerError),
    (504, "DEADLINE_EXCEEDED", "Deadline expired", errors.RequestTimeout),
    (400, "INVALID_ARGUMENT", "Unknown name \"x\"", errors.BadRequest),
    (400, "INVALID_ARGUMENT", "The input token count (9) exceeds the maximum number of tokens "
                              "allowed (5).", errors.ContextLengthExceeded),
    (401, "UNAUTHENTICATED", "API key not valid.", errors.AuthFailed),
    (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers", errors.AuthFailed),
    (404, "NOT_FOUND", "models/gemini-nope is not found", errors.ModelNotFound),
])
def test_errors_map_onto_ours(status, code, message, expected):
    assert error_for(status, code, message) is expected


def test_retry_info_is_the_retry_after_and_a_bad_key_400_is_auth():
    body = {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                   "retryDelay": "12s"}]}}
    error = error_from_body(429, body)
    assert isinstance(error, errors.RateLimited) and error.retry_after == 12.0
    assert error.code == "RESOURCE_EXHAUSTED"
    bad_key = {"error": {"code": 400, "message": "API key not valid AIzaSecret123",
                         "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID"}]}}
    error = error_from_body(400, bad_key, secrets=["AIzaSecret123"])
    assert isinstance(error, errors.AuthFailed) and "AIzaSecret123" not in error.message


def _caller(sim, **fields) -> GeminiCaller:
    config = LlmConfig(base_url=sim.base_url, model="gemini-2.5-flash", provider="gemini",
                       **fields)
    caller = provider_caller(config, "sim-key")
    assert isinstance(caller, GeminiCaller)
    return caller


def _calls(caller: GeminiCaller, *params):
    """Each request's completion, or the typed error it raised."""
    async def run():
        await caller.open()
        out = []
        try:
            for p in params:
                try:
                    out.append((await caller.call(p, 10.0))[0])
                except errors.ProviderError as exc:
                    out.append(exc)
        finally:
            await caller.close()
        return out
    return asyncio.run(run())


def test_the_sdk_against_the_simulator_limits_faults_and_the_implicit_cache(simulator_factory):
    sim = simulator_factory(port=0, api_key="sim-key", gemini_rpm=3, context_window=4000)
    long = {**CHAT, "messages": [{"role": "system", "content": MANUAL}, *CHAT["messages"][1:]]}
    schema = {**CHAT, "response_format": {"type": "json_schema",
                                          "json_schema": {"name": "t", "schema": SCHEMA}}}
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 20_000}]}
    first, second, structured, limited = _calls(_caller(sim), long, long, schema, CHAT)
    assert first.cached_tokens == 0 and first.prompt_tokens > 2000
    assert second.cached_tokens >= 2000  # the repeated prefix, after first use
    assert structured.content and set(json.loads(structured.content)) >= {"queue", "note"}
    # The fourth request of a 3-per-minute limit: 429 RESOURCE_EXHAUSTED with its RetryInfo.
    assert isinstance(limited, errors.RateLimited) and 1 <= limited.retry_after <= 60
    stats = sim.stats()
    assert stats["gemini_requests"] == 4 and stats["cache_read_input_tokens"] >= 2000

    sim.reset()
    too_long, = _calls(_caller(sim), huge)
    assert isinstance(too_long, errors.ContextLengthExceeded) and too_long.status == 400
    unavailable = simulator_factory(port=0, p_503=1.0)
    down, = _calls(_caller(unavailable), CHAT)
    assert isinstance(down, errors.ServerError) and down.status == 503 and down.retryable
    assert unavailable.stats()["by_status"] == {"503": 1}  # the SDK did not retry on its own
    wrong = _calls(GeminiCaller(LlmConfig(base_url=sim.root_url, model="gemini-2.5-flash",
                                          provider="gemini"), "wrong-key"), CHAT)[0]
    assert isinstance(wrong, errors.AuthFailed) and "wrong-key" not in wrong.message


def test_a_job_on_gemini_retries_429s_and_503s_and_reads_its_cached_prefix(
        run_pipeline, simulator_factory, tmp_path):
    # 150 per minute: a bucket of 150 refilled at 2.5/s, so the last few tickets see 429s.
    sim = simulator_factory(port=0, api_key="sim-key", gemini_rpm=150, p_503=0.03, seed=3,
                            context_window=4000)
    tickets = [{"id": f"G-{i}", "body": f"Order {i} arrived broken."} for i in range(155)]
    tickets.append({"id": "G-huge", "body": "too long " * 1000})
    ticket_file = tmp_path / "t.jsonl"
    ticket_file.write_text("".join(json.dumps(t) + "\n" for t in tickets))
    manual = tmp_path / "system.txt"  # over 2.5 Flash's 1,024-token implicit-cache minimum
    manual.write_text(MANUAL)
    run = run_pipeline("--input", str(ticket_file), "--base_url", sim.base_url, "--model",
                       "gemini-2.5-flash", "--system_prompt", f"@{manual}",
                       "--max_concurrency", "4", env={"GEMINI_API_KEY": "sim-key"})
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 155 and summary["dead_lettered"] == 1
    assert summary["ledger_balanced"] is True
    assert summary["read"] == summary["succeeded"] + summary["dead_lettered"]  # 0 lost
    assert summary["dead_letter_reasons"] == {"context_length": 1}
    assert run.dead_letters_by_id()["G-huge"]["reason"] == "context_length"
    assert summary["rate_limited"] >= 1 and summary["server_errors"] >= 1  # both retried
    stats = sim.stats()
    assert stats["gemini_requests"] == stats["requests"]
    assert stats["cache_read_input_tokens"] >= 150 * 1024
    assert summary["cache_read_tokens"] == stats["cache_read_input_tokens"]  # read, and priced
    assert summary["cache_saved_usd"] > 0
    assert "sim-key" not in run.stderr + run.stdout


def _tickets(tmp_path, n=40):
    ticket_file = tmp_path / "t.jsonl"
    ticket_file.write_text("".join(json.dumps({"id": f"B-{i}", "body": "Hi"}) + "\n"
                                   for i in range(n)))
    return ticket_file


def test_a_bad_key_fails_fast(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory(port=0, api_key="sim-key")
    ticket_file = _tickets(tmp_path)
    run = run_pipeline("--input", str(ticket_file), "--base_url", sim.base_url, "--model",
                       "gemini-2.5-flash", env={"GEMINI_API_KEY": "not-the-key"})
    assert run.returncode == 2 and "GEMINI_API_KEY" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "not-the-key" not in run.stderr
    assert sim.stats()["requests"] < 40  # failed fast: the job stopped sending


def test_simulate_speaks_gemini_without_a_key(run_pipeline, tmp_path):
    ticket_file = _tickets(tmp_path)
    simulated = run_pipeline("--input", str(ticket_file), "--simulate", "--provider", "gemini",
                             "--model", "gemini-2.5-flash")
    assert simulated.returncode == 0, simulated.stderr
    summary = simulated.summary()
    assert summary["succeeded"] == 40 and summary["ledger_balanced"] is True
    assert summary["simulator"]["gemini_requests"] == 40


def test_the_key_variable_and_batch_mode_are_resolved_at_the_driver(monkeypatch):
    from pipeline import config as config_lib
    from pipeline.options import TicketflowOptions

    def config(*flags):
        return config_lib.from_options(TicketflowOptions(
            ["--input", "x.jsonl", "--output", "out", "--model", "gemini-2.5-flash", *flags]))

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "g-key")
    assert config().llm.api_key_env == "GOOGLE_API_KEY" and config().llm.provider == "gemini"
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    assert config().llm.api_key_env == "GEMINI_API_KEY"
    assert config("--api_key_env", "MY_KEY", "--simulate").llm.api_key_env == "MY_KEY"
    assert config("--simulate", "--api", "batch").batch_api.batch  # Gemini's batch mode


def test_the_simulator_counts_requests_per_day_and_says_when_to_retry(simulator_factory):
    from google import genai
    from google.genai import errors as genai_errors

    now = [1000.0]
    sim = simulator_factory(port=0, gemini_rpd=2, gemini_tpm=100_000, clock=lambda: now[0])
    client = genai.Client(api_key="k", http_options={"base_url": sim.root_url,
                                                     "retry_options": {"attempts": 1}})
    for _ in range(2):
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    now[0] += 3600  # an hour later the day's two requests are still spent
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    error = error_from_body(caught.value.code, caught.value.details)
    assert caught.value.status == "RESOURCE_EXHAUSTED" and isinstance(error, errors.RateLimited)
    assert error.retry_after == 86_400 - 3600  # the rest of the simulated day
    now[0] += 86_400 - 3600
    assert client.models.generate_content(model="gemini-2.5-flash", contents="Hi").text
    client.close()


def test_a_refused_connection_is_one_quick_connection_error(simulator_factory):
    import time

    sim = simulator_factory(port=0)
    caller = _caller(sim)
    sim.close()  # nothing listens on its port any more
    started = time.monotonic()
    refused, = _calls(caller, CHAT)
    # The SDK's own implicit retry (a sleep of 1-10 s, then again) is off as well.
    assert isinstance(refused, errors.ConnectionFailed) and time.monotonic() - started < 1.0
