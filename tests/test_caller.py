"""The caller layer against real servers: answers, every fault mapped to its typed error.

``OpenAICaller`` talks to the simulator (and, for the statuses the simulator never sends, to a
tiny aiohttp app started here) through the real ``openai`` client: no HTTP is mocked. Each test
pins what the layers above rely on: the error class, its reason and retryability, the status,
the request id, the retry-after and a message without the key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from aiohttp import web

from simulator import start
from transforms import errors
from transforms.llm.providers.openai import OpenAICaller
from transforms.llm.config import LlmConfig

KEY = "sk-test-caller-0123456789"
BODY = {"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Ticket ID: T-1\n\nMy order is late. ü"}]}


def _body(text: Optional[str] = None) -> Dict[str, Any]:
    if text is None:
        return BODY
    return {**BODY, "messages": [{"role": "user", "content": text}]}


async def _calls(base_url: str, bodies: List[Dict[str, Any]], *, timeout: float = 10.0,
                 api_key: str = KEY, max_concurrency: int = 32) -> List[Any]:
    """Sends the bodies concurrently through one caller; each outcome or its typed error."""
    caller = OpenAICaller(LlmConfig(base_url=base_url, max_concurrency=max_concurrency,
                                    request_timeout_secs=timeout), api_key)
    await caller.open()
    try:
        return await asyncio.gather(*(caller.call(b, timeout) for b in bodies),
                                    return_exceptions=True)
    finally:
        await caller.close()


def _one(base_url: str, body: Optional[Dict[str, Any]] = None, **kwargs) -> Any:
    return asyncio.run(_calls(base_url, [body or BODY], **kwargs))[0]


def _assert_error(outcome, cls, *, status=None, retryable=None):
    assert isinstance(outcome, cls), repr(outcome)
    assert outcome.status == status
    if retryable is not None:
        assert outcome.retryable is retryable
    assert KEY not in outcome.message and KEY not in repr(outcome)
    return outcome


def test_an_answer_becomes_a_completion_with_headers():
    with start() as sim:
        completion, headers = _one(sim.base_url)
        stats = sim.stats()
    assert completion.content and completion.model == "gpt-4o-mini"
    assert completion.finish_reason in ("stop", "length")
    assert completion.prompt_tokens > 10 and 0 < completion.completion_tokens <= 16
    assert completion.usage_known and completion.cached_tokens == 0
    assert completion.request_id and completion.request_id == headers["x-request-id"]
    assert headers.get("X-Request-Id") == completion.request_id  # case-insensitive, as httpx
    assert stats["successful_completions"] == 1


@pytest.mark.parametrize("flag,status", [("p_500", 500), ("p_502", 502), ("p_503", 503)])
def test_server_errors_are_retryable_with_status_and_request_id(flag, status):
    with start(**{flag: 1.0}) as sim:
        err = _assert_error(_one(sim.base_url), errors.ServerError, status=status,
                            retryable=True)
    assert err.reason == "server_error" and err.request_id


def test_a_reset_connection_is_a_connection_error():
    with start(p_reset=1.0) as sim:
        err = _assert_error(_one(sim.base_url), errors.ConnectionFailed, retryable=True)
    assert err.reason == "connection_error" and err.message.startswith("connection error")


def test_a_refused_connection_is_a_connection_error_not_a_timeout():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = _assert_error(_one(f"http://127.0.0.1:{port}/v1"), errors.ConnectionFailed,
                        retryable=True)
    assert err.reason == "connection_error"


def test_a_malformed_body_is_a_malformed_response():
    with start(p_malformed=1.0) as sim:
        err = _assert_error(_one(sim.base_url), errors.MalformedResponse, retryable=True)
    assert err.reason == "malformed_response" and "JSONDecodeError" in err.message


def test_a_hanging_request_times_out_at_the_call_timeout():
    with start(p_hang=1.0, hang_secs=3.0) as sim:
        started = time.monotonic()
        err = _assert_error(_one(sim.base_url, timeout=0.3), errors.RequestTimeout,
                            retryable=True)
        elapsed = time.monotonic() - started
    assert err.reason == "timeout"
    assert elapsed < 2.5  # gave up before the simulator's 504


def test_permanent_refusals_content_filter_and_context_length():
    with start(context_window=50) as sim:
        filtered, too_long = asyncio.run(_calls(sim.base_url, [
            _body("CONTENT_FILTER please"), _body("long " * 200)]))
    _assert_error(filtered, errors.ContentFiltered, status=400, retryable=False)
    assert filtered.reason == "content_filter" and filtered.code == "content_filter"
    _assert_error(too_long, errors.ContextLengthExceeded, status=400, retryable=False)
    assert too_long.reason == "context_length" and "context length" in too_long.message


def test_a_wrong_key_is_an_auth_error_and_a_wrong_path_not_found():
    with start(api_key="the-right-key") as sim:
        auth = _assert_error(_one(sim.base_url), errors.AuthFailed, status=401, retryable=False)
        assert _one(sim.base_url, api_key="the-right-key")[0].content  # the right key passes
        root = sim.base_url.rsplit("/v1", 1)[0]
        missing = _assert_error(_one(root + "/nowhere/v1", api_key="the-right-key"),
                                errors.NotFound, status=404, retryable=False)
    assert auth.reason == "auth_error" and missing.reason == "not_found"
    assert type(missing) is errors.NotFound  # a wrong path is no wrong model


def test_a_model_the_endpoint_does_not_serve_is_model_not_found():
    with start(models="gpt-4o-mini") as sim:
        missing = _assert_error(_one(sim.base_url, {**BODY, "model": "gpt-5-typo"}),
                                errors.ModelNotFound, status=404, retryable=False)
        assert _one(sim.base_url)[0].content  # the served model answers
    assert missing.reason == "not_found" and missing.code == "model_not_found"
    assert "gpt-5-typo" in missing.message


def test_rate_limited_carries_the_retry_after():
    with start(rpm=60, burst_secs=1) as sim:
        first, second = asyncio.run(_calls(sim.base_url, [BODY, BODY]))
    assert first[0].content
    err = _assert_error(second, errors.RateLimited, status=429, retryable=True)
    assert err.reason == "rate_limited" and 0 < err.retry_after <= 1.0
    assert err.request_id


def test_the_connection_pool_is_max_concurrency_plus_8():
    # max_concurrency=2: a pool of 10. The simulator refuses an 11th request in flight with 503.
    with start(max_concurrency=10, latency_median_ms=150) as sim:
        pooled = asyncio.run(_calls(sim.base_url, [BODY] * 25, max_concurrency=2))
        wide = asyncio.run(_calls(sim.base_url, [BODY] * 25, max_concurrency=20))
    assert all(isinstance(o, tuple) for o in pooled), [o for o in pooled if
                                                       not isinstance(o, tuple)][:1]
    assert any(isinstance(o, errors.ServerError) and o.status == 503 for o in wide)


# -- statuses the simulator never sends: a small real server ---------------------------------

_ANSWER = {"id": "x", "object": "chat.completion", "model": "m-1",
           "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": None}}],
           "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                     "prompt_tokens_details": {"cached_tokens": 5}}}

_ROUTES: Dict[str, Tuple[int, Any, Dict[str, str]]] = {
    "408": (408, {"error": {"message": "timeout", "type": "x"}}, {}),
    "409": (409, {"error": {"message": "conflict", "type": "x"}}, {"retry-after": "2"}),
    "422": (422, {"error": {"message": "bad thing", "type": "x"}}, {}),
    "400": (400, {"error": {"message": f"no such key {KEY} here", "type": "x",
                            "code": "bad"}}, {"x-request-id": "req-400"}),
    "nochoices": (200, {"id": "x", "choices": []}, {}),
    "notadict": (200, [1, 2], {}),
    "nousage": (200, {**_ANSWER, "usage": None}, {}),
    "cached": (200, _ANSWER, {"x-request-id": "req-ok"}),
}


async def _small_server_outcomes() -> Dict[str, Any]:
    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        status, payload, headers = _ROUTES[body["messages"][-1]["content"]]
        return web.json_response(payload, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        outcomes = await _calls(f"http://127.0.0.1:{port}/v1", [_body(n) for n in _ROUTES])
    finally:
        await runner.cleanup()
    return dict(zip(_ROUTES, outcomes))


def test_other_statuses_and_odd_bodies_through_a_real_server():
    out = asyncio.run(_small_server_outcomes())
    assert _assert_error(out["408"], errors.Conflict, status=408, retryable=True)
    conflict = _assert_error(out["409"], errors.Conflict, status=409, retryable=True)
    assert conflict.retry_after == 2.0
    assert _assert_error(out["422"], errors.Unprocessable, status=422, retryable=False)
    bad = _assert_error(out["400"], errors.BadRequest, status=400, retryable=False)
    assert "[REDACTED]" in bad.message and bad.request_id == "req-400" and bad.code == "bad"
    for name in ("nochoices", "notadict"):
        _assert_error(out[name], errors.MalformedResponse, retryable=True)
    no_usage, _ = out["nousage"]
    assert (no_usage.usage_known, no_usage.prompt_tokens, no_usage.content) == (False, 0, "")
    cached, headers = out["cached"]
    assert (cached.prompt_tokens, cached.completion_tokens, cached.cached_tokens) == (7, 3, 5)
    assert (cached.model, cached.finish_reason, cached.request_id) == ("m-1", "stop", "req-ok")
    assert json.loads(json.dumps(dict(headers)))["x-request-id"] == "req-ok"


# -- the JSON of the hot path: orjson, with the standard library for what orjson refuses -------

def test_body_encoding_and_answer_parsing_agree_with_the_standard_library():
    from tools.ticketgen.generator import generate

    from transforms.llm.providers.openai import encode_body, parse_completion
    from transforms.records import Ticket

    odd = {"id": "ü\ud800", "n": 2 ** 70, "x": float("nan"), "nested": {"1": [1.5e-7, None]}}
    for record in [*generate(200, seed=9), odd]:
        params = {**BODY, "messages": [{"role": "user", "content": json.dumps(record)}]}
        assert json.loads(encode_body(params)) == params
        ticket = Ticket(id="T", subject="", body="b", fields=record)
        assert json.dumps(ticket.fields) == json.dumps(json.loads(ticket.fields_json))
    assert json.loads(encode_body({1: "non-string key"})) == {"1": "non-string key"}
    big = parse_completion(json.dumps({**_ANSWER, "usage": {"prompt_tokens": 2 ** 70}}).encode())
    assert big.prompt_tokens == 2 ** 70  # orjson refuses it; json reads it, as before
    with pytest.raises(json.JSONDecodeError) as caught:
        parse_completion(b'{"id": "cut')
    assert str(caught.value) == str(_decode_error(b'{"id": "cut'))  # the message of before


def _decode_error(content: bytes) -> Exception:
    try:
        json.loads(content)
    except json.JSONDecodeError as exc:
        return exc
    raise AssertionError("valid JSON")
