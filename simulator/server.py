"""The simulator's HTTP server: an OpenAI-compatible chat completions endpoint on aiohttp.

Run it as a process (``python -m simulator --rpm 60``) or in-process from tests and benchmarks:

    from simulator import start

    with start(rpm=60, p_503=0.1, seed=1) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0)
        ...
        assert sim.stats()["successful_completions"] > 0

``start`` runs the server on its own asyncio loop in a daemon thread. The request path is kept
lean (no per-request logging, cached headers when unlimited) so that one core serves thousands of
requests per second at zero latency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.anthropic import AnthropicRoutes
from simulator.anthropic_batch import MessageBatchRoutes
from simulator.batch import BatchStore
from simulator.batch_http import BatchRoutes
from simulator.config import SimulatorConfig
from simulator.content import (
    content_rng,
    instance_for_schema,
    invalid_instance_text,
    json_object_reply,
    request_key,
    support_reply,
    truncate_to_tokens,
)
from simulator.gpu import GpuModel, GpuSettings
from simulator.faults import (NO_MARKERS, AttemptCounter, FaultDraw, Markers,
                              conversation_root, find_markers)
from simulator.gemini import GeminiRoutes
from simulator.gemini_batch import GeminiBatchRoutes
from simulator.limits import Decision, RateLimiter, format_duration
from simulator.openai_cache import OpenAIPromptCache
from simulator.stats import STATUS_RESET, Stats
from simulator.tokens import count_tokens, message_text, prompt_tokens

if TYPE_CHECKING:
    from typing import Self

_LOG = logging.getLogger(__name__)

#: Model ids listed by ``GET /v1/models`` without ``--models`` (then any model name is served).
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano", "o4-mini")

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_JSON = "application/json"
_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_STATUS_CANCELLED = 499  # nginx's "client closed request": the handler was cancelled
_MAX_BODY = 64 * 1024 * 1024


class _BadRequest(Exception):
    """A request the simulator answers with 400; carries OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error_dict(message: str, type_: str, code: str | None,
                param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return _dumps(_error_dict(message, type_, code, param))


_SERVER_ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout: the upstream did not answer in time.",
}
_CONTENT_FILTER = _error_dict(
    "The response was filtered due to the prompt triggering the content management policy. "
    "Please modify your prompt and retry.", "invalid_request_error", "content_filter", "prompt")


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object", type(None): "null"}.get(type(value), "a value")


def _optional_int(body: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"Invalid type for '{name}': expected an integer, but got "
                          f"{_type_name(value)} instead.", name, "invalid_type")
    if minimum is not None and value < minimum:
        raise _BadRequest(f"Invalid '{name}': integer below minimum value. Expected a value >= "
                          f"{minimum}, but got {value} instead.", name, "integer_below_min_value")
    return value


class ChatRequest:
    """A validated chat completion request (only the fields the simulator uses).

    Args:
        body: The decoded JSON body.

    Raises:
        _BadRequest: If the body does not follow OpenAI's request schema.
    """

    __slots__ = ("cache_key", "max_tokens", "messages", "model", "response_format", "schema",
                 "seed", "text")

    def __init__(self, body: Any):
        if not isinstance(body, dict):
            raise _BadRequest(f"Invalid request body: expected a JSON object, but got "
                              f"{_type_name(body)} instead.", None, "invalid_type")
        model = body.get("model")
        if model is None:
            raise _BadRequest("Missing required parameter: 'model'.", "model",
                              "missing_required_parameter")
        if not isinstance(model, str) or not model:
            raise _BadRequest("Invalid 'model': expected a non-empty string.", "model",
                              "invalid_type")
        messages = body.get("messages")
        if messages is None:
            raise _BadRequest("Missing required parameter: 'messages'.", "messages",
                              "missing_required_parameter")
        if not isinstance(messages, list):
            raise _BadRequest(f"Invalid type for 'messages': expected an array, but got "
                              f"{_type_name(messages)} instead.", "messages", "invalid_type")
        if not messages:
            raise _BadRequest("Invalid 'messages': empty array. Expected an array with minimum "
                              "length 1, but got an empty array instead.", "messages",
                              "empty_array")
        texts = []
        for i, message in enumerate(messages):
            param = f"messages[{i}]"
            if not isinstance(message, dict):
                raise _BadRequest(f"Invalid type for '{param}': expected an object, but got "
                                  f"{_type_name(message)} instead.", param, "invalid_type")
            role = message.get("role")
            if role not in _ROLES:
                raise _BadRequest(f"Invalid value for '{param}.role': expected one of "
                                  f"{', '.join(sorted(_ROLES))}.", f"{param}.role",
                                  "invalid_value")
            if "content" not in message and role != "assistant":
                raise _BadRequest(f"Missing required parameter: '{param}.content'.",
                                  f"{param}.content", "missing_required_parameter")
            content = message.get("content")
            if not (isinstance(content, (str, list)) or (content is None and role == "assistant")):
                raise _BadRequest(f"Invalid type for '{param}.content': expected a string or an "
                                  f"array, but got {_type_name(content)} instead.",
                                  f"{param}.content", "invalid_type")
            texts.append(message_text(content))
        max_tokens = _optional_int(body, "max_tokens", 1)
        max_completion_tokens = _optional_int(body, "max_completion_tokens", 1)
        seed = _optional_int(body, "seed")
        temperature = body.get("temperature")
        if temperature is not None and (isinstance(temperature, bool)
                                        or not isinstance(temperature, (int, float))):
            raise _BadRequest(f"Invalid type for 'temperature': expected a number, but got "
                              f"{_type_name(temperature)} instead.", "temperature",
                              "invalid_type")
        if temperature is not None and not 0 <= temperature <= 2:
            raise _BadRequest("Invalid 'temperature': expected a value between 0 and 2.",
                              "temperature", "invalid_value")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise _BadRequest(f"Invalid type for 'user': expected a string, but got "
                              f"{_type_name(user)} instead.", "user", "invalid_type")
        if body.get("stream"):
            raise _BadRequest("The simulator does not support 'stream': true.", "stream",
                              "unsupported_value")
        cache_key = body.get("prompt_cache_key")
        if cache_key is not None and not isinstance(cache_key, str):
            raise _BadRequest(f"Invalid type for 'prompt_cache_key': expected a string, but got "
                              f"{_type_name(cache_key)} instead.", "prompt_cache_key",
                              "invalid_type")
        self.cache_key = cache_key
        self.response_format, self.schema = _parse_response_format(body.get("response_format"))
        self.model = model
        self.messages = messages
        self.max_tokens = max_completion_tokens if max_completion_tokens is not None \
            else max_tokens
        self.seed = seed
        self.text = "\n".join(texts)


def _parse_response_format(value: Any) -> tuple[str, dict[str, Any] | None]:
    if value is None:
        return "text", None
    if not isinstance(value, dict):
        raise _BadRequest(f"Invalid type for 'response_format': expected an object, but got "
                          f"{_type_name(value)} instead.", "response_format", "invalid_type")
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _BadRequest("Invalid value for 'response_format.type': expected one of 'text', "
                          "'json_object' or 'json_schema'.", "response_format.type",
                          "invalid_value")
    if kind != "json_schema":
        return kind, None
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _BadRequest("Missing required parameter: 'response_format.json_schema'.",
                          "response_format.json_schema", "missing_required_parameter")
    if not isinstance(spec.get("name"), str):
        raise _BadRequest("Missing required parameter: 'response_format.json_schema.name'.",
                          "response_format.json_schema.name", "missing_required_parameter")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise _BadRequest("Invalid type for 'response_format.json_schema.schema': expected an "
                          "object.", "response_format.json_schema.schema", "invalid_type")
    return kind, schema


class Simulator:
    """The request handlers and their state: limits, faults, marker counters, stats, batches.

    Args:
        config: What to simulate.
        clock: Monotonic seconds for rate limits, per-second stats and the progress of batches
            (injected for tests).
        wall_clock: Epoch seconds for ``created``, ``started_at`` and batch timestamps.
    """

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.config = config
        self._wall_clock = wall_clock
        self.limiter = RateLimiter(config.rpm, config.tpm, config.burst_secs, clock)
        self.stats = Stats(clock, wall_clock)
        self._faults = FaultDraw(config, random.Random(config.seed))
        # A separate stream, so that latency draws never shift which requests fail.
        self._latency_rng = random.Random(f"{config.seed}:latency")
        self._fail_attempts = AttemptCounter()
        self._invalid_attempts = AttemptCounter()
        self._ids = itertools.count(1)
        self._id_prefix = f"{random.Random(f'{config.seed}:ids').getrandbits(32):08x}"
        self._auth = f"Bearer {config.api_key}" if config.api_key else None
        self._served = frozenset(config.served_models())
        self._static_limit_headers = self.limiter.headers() if self.limiter.unlimited else None
        median = config.latency_median_ms / 1000
        self._latency_mu = math.log(median) if median > 0 else None
        p99 = config.latency_p99_ms / 1000
        self._latency_sigma = (math.log(p99 / median) / _Z99
                               if median > 0 and p99 > median else 0.0)
        # OpenAI's automatic prompt cache: cached_tokens for repeated prefixes of 1,024+ tokens.
        self.prompt_cache = OpenAIPromptCache(clock)
        self.batches = BatchStore(config, self.answer, self.stats, clock, wall_clock)
        #: ``--server_model gpu``: the batch scheduler that times chat completions.
        self.gpu = GpuModel(GpuSettings(
            config.gpu_max_batch, config.gpu_decode_ms, config.gpu_decode_ms_per_seq,
            config.gpu_prefill_ms_per_token, config.gpu_queue)) \
            if config.server_model == "gpu" else None
        self._batch_routes = BatchRoutes(self.batches, self.authorized)
        self.anthropic = AnthropicRoutes(config, self.stats, self._faults, self.latency_secs,
                                         self._fail_attempts, self._invalid_attempts, clock,
                                         wall_clock)
        self.batches.anthropic_answer = self.anthropic.answer
        # Anthropic's Message Batches: the same store and lifecycle, Anthropic's wire.
        self._message_batch_routes = MessageBatchRoutes(
            self.batches, self.anthropic, self._batch_routes.stall,
            self._batch_routes.catch_up)
        self.gemini = GeminiRoutes(config, self.stats, self._faults, self.latency_secs,
                                   self._fail_attempts, self._invalid_attempts, clock)
        self.batches.gemini_answer = self.gemini.answer
        # Gemini's batch mode and Files API: the same store and lifecycle, Gemini's wire.
        self._gemini_batch_routes = GeminiBatchRoutes(
            self.batches, self.gemini, self._batch_routes.stall, self._batch_routes.catch_up)

    # ---- application -------------------------------------------------------------------------

    def app(self) -> web.Application:
        """Returns the aiohttp application serving every endpoint."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/chat/completions", self.handle_chat)
        # Anthropic's clients send anthropic-version: where the two APIs share a path, it decides.
        by_version = self.anthropic.by_version
        app.router.add_get("/v1/models", by_version(self.handle_models,
                                                    self.anthropic.handle_models))
        app.router.add_get("/v1/models/{model}", by_version(self.handle_model,
                                                            self.anthropic.handle_model))
        self.anthropic.add_routes(app)
        self.gemini.add_routes(app)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_post("/reset", self.handle_reset)
        app.router.add_get("/health", self.handle_health)
        self._batch_routes.add_routes(app)
        self._message_batch_routes.add_routes(app)
        self._gemini_batch_routes.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", by_version(self.handle_not_found,
                                                           self.anthropic.handle_not_found))
        return app

    def reset(self) -> None:
        """Zeroes the stats, the rate-limit windows and buckets and the marker attempt counters;
        forgets every file, batch and cached prompt."""
        self.stats.reset()
        self.limiter.reset()
        self._fail_attempts.clear()
        self._invalid_attempts.clear()
        self.batches.reset()
        self.anthropic.reset()
        if self.gpu is not None:
            self.gpu.reset()
        self.gemini.reset()
        self.prompt_cache.clear()

    # ---- helpers -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = (dict(self._static_limit_headers) if self._static_limit_headers is not None
                   else self.limiter.headers())
        headers["x-request-id"] = f"req_{self._id_prefix}{next(self._ids):012d}"
        headers["Content-Type"] = _JSON
        return headers

    def _error(self, status: int, message: str, type_: str, code: str | None,
               param: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=_error_body(message, type_, code, param),
                            headers=headers or self._headers())

    def _server_error(self, status: int) -> web.Response:
        return self._error(status, _SERVER_ERRORS[status], "server_error", None)

    def _content_filter(self) -> web.Response:
        return web.Response(status=400, body=_dumps(_CONTENT_FILTER), headers=self._headers())

    def _rate_limited(self, decision: Decision, model: str) -> web.Response:
        headers = self._headers()
        if math.isinf(decision.retry_after):
            wait = decision.window_secs
            message = (f"Request too large for {model} in organization org-simulator on "
                       f"{decision.kind} per min: Limit {decision.limit}, Requested "
                       f"{decision.requested}. The input or output tokens must be reduced in "
                       f"order to run successfully.")
        else:
            wait = decision.retry_after
            window = ("per min (RPM)" if decision.kind == "requests" else "per min (TPM)") \
                if decision.window_secs >= 60 else f"per {decision.window_secs:g}s (burst)"
            message = (f"Rate limit reached for {decision.kind} {window} for {model} in "
                       f"organization org-simulator: Limit {decision.limit}, Used {decision.used},"
                       f" Requested {decision.requested}. Please try again in "
                       f"{format_duration(wait)}.")
        # The epsilon keeps float noise (58.2 -> 58.200000001) from rounding up a whole unit.
        headers["retry-after"] = str(max(1, math.ceil(wait - 1e-9)))
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000 - 1e-6)))
        return self._error(429, message, decision.kind, "rate_limit_exceeded", headers=headers)

    async def _reset_connection(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=self._headers())
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"id":"chatcmpl-reset","object":"chat.completion","choi')
        if request.transport is not None:
            request.transport.abort()
        return response

    def latency_secs(self, completion_tokens: int) -> float:
        """Draws the latency of one successful response.

        Args:
            completion_tokens: The reply's length, for ``ms_per_output_token``.

        Returns:
            Seconds: a log-normal draw with the configured median and p99 (constant when no
            p99 above the median is set), plus the per-token time.
        """
        delay = 0.0
        if self._latency_mu is not None:
            delay = (self._latency_rng.lognormvariate(self._latency_mu, self._latency_sigma)
                     if self._latency_sigma else math.exp(self._latency_mu))
        return delay + self.config.ms_per_output_token * completion_tokens / 1000

    # ---- handlers ----------------------------------------------------------------------------

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``: counts the request, never lets an exception escape."""
        stats = self.stats
        in_flight = stats.enter()
        # status, prompt tokens, completion tokens, 1 if a 200 is not a completion (malformed)
        outcome = [_STATUS_CANCELLED, 0, 0, 0]
        try:
            return await self._chat(request, in_flight, outcome)
        except Exception:  # noqa: BLE001 - nothing a client sends may take the server down
            _LOG.exception("unexpected error handling a chat completion")
            stats.fault("internal_error")
            outcome[0] = 500
            return self._server_error(500)
        finally:
            stats.leave()
            stats.record(outcome[0], outcome[1], outcome[2], completed=not outcome[3])

    async def _chat(self, request: web.Request, in_flight: int,
                    outcome: list[int]) -> web.StreamResponse:
        config = self.config
        if config.max_concurrency and in_flight > config.max_concurrency:
            outcome[0] = 503
            return self._error(503, "The engine is currently overloaded, please try again "
                                    "later.", "server_error", "overloaded")
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            outcome[0] = 401
            # Never echo what the client sent: it may be a real key pasted by mistake.
            return self._error(401, "Incorrect API key provided. The simulator was started "
                                    "with --api_key; send 'Authorization: Bearer <that key>'.",
                               "invalid_request_error", "invalid_api_key")
        try:
            raw = await request.read()
        except web.HTTPException as exc:  # e.g. 413: body over client_max_size
            outcome[0] = exc.status
            return self._error(exc.status, exc.reason, "invalid_request_error", None)
        try:
            chat = ChatRequest(json.loads(raw))
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            outcome[0] = 400
            return self._error(400, "We could not parse the JSON body of your request. (HINT: "
                                    "This likely means you aren't using your HTTP library "
                                    "correctly.)", "invalid_request_error", None)
        except _BadRequest as exc:
            outcome[0] = 400
            return self._error(400, exc.message, "invalid_request_error", exc.code, exc.param)
        n_prompt = prompt_tokens(chat.messages)
        markers = find_markers(chat.text)
        refusal = self._refusal(chat, n_prompt, markers)
        if refusal is not None:
            outcome[0] = refusal[0]
            if refusal[2]:
                self.stats.fault(refusal[2])
            return web.Response(status=refusal[0], body=_dumps(refusal[1]),
                                headers=self._headers())

        max_out = chat.max_tokens if chat.max_tokens is not None else config.default_max_tokens
        decision = self.limiter.acquire(n_prompt + max_out)
        if not decision.allowed:
            outcome[0] = 429
            return self._rate_limited(decision, chat.model)

        fault = self._faults.draw()
        if fault is not None:
            return await self._inject(fault, request, outcome)
        status, body, marker_fault = self._complete(chat, n_prompt, markers)
        if marker_fault:
            self.stats.fault(marker_fault)
        if status != 200:
            outcome[0] = status
            return web.Response(status=status, body=_dumps(body), headers=self._headers())
        cached, cache_keys = self.prompt_cache.lookup(chat.model, chat.cache_key, chat.messages)
        body["usage"]["prompt_tokens_details"] = {"cached_tokens": min(cached, n_prompt)}
        n_completion = body["usage"]["completion_tokens"]
        if self.gpu is not None:
            if not await self.gpu.generate(n_prompt, n_completion):
                outcome[0] = 503
                return self._error(503, "The server is overloaded: its queue is full, please "
                                        "try again later.", "server_error", "overloaded")
        elif (delay := self.latency_secs(n_completion)) > 0:
            await asyncio.sleep(delay)
        body["created"] = int(self._wall_clock())
        if request.transport is None or request.transport.is_closing():
            # The client went away while the answer was generated (e.g. its process was killed):
            # like a provider that stops generating for a closed connection, this is no
            # completion, so tests can count exactly what a client received (status 499).
            return web.Response(status=_STATUS_CANCELLED)
        outcome[:3] = [200, n_prompt, n_completion]
        self.prompt_cache.store(cache_keys)
        return web.Response(body=_dumps(body), headers=self._headers())

    async def _inject(self, fault: str, request: web.Request,
                      outcome: list[int]) -> web.StreamResponse:
        """Answers with the drawn fault and records its status in ``outcome``."""
        self.stats.fault(fault)
        if fault in ("500", "502", "503"):
            outcome[0] = int(fault)
            return self._server_error(int(fault))
        if fault == "content_filter":
            outcome[0] = 400
            return self._content_filter()
        if fault == "hang":
            await asyncio.sleep(self.config.hang_secs)
            outcome[0] = 504
            return self._server_error(504)
        if fault == "reset":
            outcome[0] = STATUS_RESET
            return await self._reset_connection(request)
        # malformed: a 200 whose JSON stops half-way, as from a proxy that cut the body.
        outcome[0], outcome[3] = 200, 1
        return web.Response(body=b'{"id":"chatcmpl-malformed","object":"chat.completion",'
                                 b'"choices":[{"index":0,"message":{"role":"assist',
                            headers=self._headers())

    def _refusal(self, chat: ChatRequest, n_prompt: int,
                 markers: Markers) -> tuple[int, dict[str, Any], str | None] | None:
        """The refusals that come before any budget: (status, body, fault kind) or None."""
        if self._served and chat.model not in self._served:
            return 404, _error_dict(f"The model `{chat.model}` does not exist or you do not "
                                    "have access to it.", "invalid_request_error",
                                    "model_not_found"), None
        if markers.not_found:
            return 404, _error_dict("The resource this request refers to does not exist.",
                                    "invalid_request_error", None), "not_found"
        window = self.config.context_window
        if n_prompt > window:
            return 400, _error_dict(
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {n_prompt} tokens. Please reduce the length of the "
                f"messages.", "invalid_request_error", "context_length_exceeded",
                "messages"), None
        if markers.content_filter:
            return 400, _CONTENT_FILTER, "content_filter"
        return None

    def _complete(self, chat: ChatRequest, n_prompt: int,
                  markers: Markers) -> tuple[int, dict[str, Any], str | None]:
        """The answer once admitted, without latency: (status, body, marker fault kind or None).

        Online and batch lines share it, so both give the same content for the same request.
        """
        key = request_key(chat.model, chat.messages) if markers is not NO_MARKERS else ""
        if markers.fail_n_times and self._fail_attempts.take(key) < markers.fail_n_times:
            return 503, _error_dict(_SERVER_ERRORS[503], "server_error", None), "fail_n_times"
        try:
            content, finish_reason = self._content(chat)
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            # The schema is the only client input that reaches content generation.
            return 400, _error_dict(f"Invalid schema for response_format: "
                                    f"{type(exc).__name__}: {exc}", "invalid_request_error",
                                    "invalid_json_schema", "response_format"), None
        fault = None
        if markers.invalid_output_n_times:
            # Per conversation: a repair follow-up (invalid answer + correction appended) is the
            # next attempt of the same conversation, not a new request.
            attempt = self._invalid_attempts.take(
                request_key(chat.model, conversation_root(chat.messages)))
            if attempt < markers.invalid_output_n_times:
                fault = "invalid_output"
                content = invalid_instance_text(content, chat.schema, attempt)
        n_completion = count_tokens(content)
        return 200, {
            "id": f"chatcmpl-{self._id_prefix}{next(self._ids):012d}",
            "object": "chat.completion",
            "created": int(self._wall_clock()),
            "model": chat.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None,
                            "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                      "total_tokens": n_prompt + n_completion},
            "system_fingerprint": "fp_simulator",
        }, fault

    def answer(self, body: Any, created: int) -> tuple[int, dict[str, Any]]:
        """Answers one Batch API line as the online endpoint would answer the same body, without
        rate limits, latency or random faults (the markers still apply).

        Args:
            body: The line's request body.
            created: The answer's ``created`` (epoch seconds).

        Returns:
            (HTTP status, response body): a ``chat.completion`` or OpenAI's error body.
        """
        try:
            chat = ChatRequest(body)
            n_prompt = prompt_tokens(chat.messages)
            markers = find_markers(chat.text)
            status, payload, _ = (self._refusal(chat, n_prompt, markers)
                                  or self._complete(chat, n_prompt, markers))
        except _BadRequest as exc:
            return 400, _error_dict(exc.message, "invalid_request_error", exc.code, exc.param)
        except Exception:  # noqa: BLE001 - one bad line must not break the batch
            _LOG.exception("unexpected error answering a batch line")
            return 500, _error_dict(_SERVER_ERRORS[500], "server_error", None)
        if status == 200:
            payload["created"] = created
            # The online shape; a batch line reads no prompt cache here.
            payload["usage"]["prompt_tokens_details"] = {"cached_tokens": 0}
        return status, payload

    def authorized(self, request: web.Request) -> bool:
        """Whether ``request`` carries the API key (always True without ``--api_key``)."""
        return self._auth is None or request.headers.get("Authorization") == self._auth

    def _content(self, chat: ChatRequest) -> tuple[str, str]:
        rng = content_rng(request_key(chat.model, chat.messages), chat.seed)
        if chat.response_format == "json_schema":
            text = json.dumps(instance_for_schema(chat.schema or {}, rng, chat.messages),
                              ensure_ascii=False)
        elif chat.response_format == "json_object":
            text = json.dumps(json_object_reply(chat.messages, rng), ensure_ascii=False)
        else:
            text = support_reply(chat.messages, rng)
        if chat.max_tokens is not None:
            text, truncated = truncate_to_tokens(text, chat.max_tokens)
            if truncated:
                return text, "length"
        return text, "stop"

    async def handle_models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: OpenAI's list shape."""
        if not self.authorized(request):
            return self._unauthorized()
        data = [_model(m) for m in (self.config.served_models() or MODELS)]
        return web.Response(body=_dumps({"object": "list", "data": data}),
                            headers=self._headers())

    async def handle_model(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{model}``: a served model (any name without ``--models``), else
        OpenAI's 404 ``model_not_found``."""
        if not self.authorized(request):
            return self._unauthorized()
        model = request.match_info["model"]
        if self._served and model not in self._served:
            return self._error(404, f"The model '{model}' does not exist",
                               "invalid_request_error", "model_not_found", "model")
        return web.Response(body=_dumps(_model(model)), headers=self._headers())

    def _unauthorized(self) -> web.Response:
        return self._error(401, "Incorrect API key provided.", "invalid_request_error",
                           "invalid_api_key")

    async def handle_stats(self, request: web.Request) -> web.Response:
        """``GET /stats``: the counters (see ``Stats.snapshot``)."""
        return web.Response(body=_dumps(self.snapshot()), content_type=_JSON)

    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /stats``: the counters, and the GPU model's when it runs."""
        body = self.stats.snapshot()
        if self.gpu is not None:
            body["gpu"] = self.gpu.snapshot()
        return body

    async def handle_reset(self, request: web.Request) -> web.Response:
        """``POST /reset``: zero stats, rate-limit windows and marker counters."""
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type=_JSON)

    async def handle_health(self, request: web.Request) -> web.Response:
        """``GET /health``: liveness probe."""
        return web.Response(body=b'{"ok":true}', content_type=_JSON)

    async def handle_not_found(self, request: web.Request) -> web.Response:
        """Any other path or method: OpenAI's 404 body (counted as ``unknown_urls``)."""
        self.stats.unknown_urls += 1
        return self._error(404, f"Invalid URL ({request.method} {request.path})",
                           "invalid_request_error", None)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "simulator"}


async def _start_site(simulator: Simulator) -> tuple[web.AppRunner, int]:
    config = simulator.config
    access_log = logging.getLogger("aiohttp.access") if config.log_requests else None
    # A short shutdown timeout: hanging requests (p_hang) must not hold up close() or SIGTERM.
    runner = web.AppRunner(simulator.app(), access_log=access_log, handle_signals=False,
                           shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=2048, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class SimulatorHandle:
    """A simulator running in a background thread; returned by ``start``.

    Attributes:
        base_url: The OpenAI base URL, e.g. "http://127.0.0.1:PORT/v1".
        root_url: The server's root, e.g. "http://127.0.0.1:PORT": the base URL of clients that
            add ``/v1/...`` themselves, such as Anthropic's.
        port: The bound port.
        config: The config it runs with.
        simulator: The ``Simulator`` (its state belongs to the server thread; use ``stats()``).
    """

    def __init__(self, simulator: Simulator, loop: asyncio.AbstractEventLoop,
                 runner: web.AppRunner, port: int, thread: threading.Thread):
        self.simulator = simulator
        self.config = simulator.config
        self.port = port
        self.base_url = _base_url(simulator.config.host, port)
        self.root_url = self.base_url.removesuffix("/v1")
        self._loop = loop
        self._runner = runner
        self._thread = thread
        self._closed = False

    def _call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        """Returns the same dict as ``GET /stats``."""
        return self._call(self.simulator.snapshot)

    def reset(self) -> None:
        """Same as ``POST /reset``: zero stats, rate-limit windows and marker counters."""
        self._call(self.simulator.reset)

    def close(self) -> None:
        """Stops the server and its thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start(config: SimulatorConfig | None = None, *, clock: Callable[[], float] | None = None,
          **overrides: Any) -> SimulatorHandle:
    """Starts a simulator on its own event loop in a daemon thread.

    Args:
        config: What to simulate. When omitted, the defaults with ``port=0`` (a free port).
        clock: Monotonic seconds for rate limits and per-second stats; tests pass a fake one to
            move time without sleeping. Defaults to ``time.monotonic``.
        **overrides: Field overrides applied to ``config``, e.g. ``start(rpm=60, seed=1)``.

    Returns:
        A handle with ``base_url``, ``stats()``, ``reset()`` and ``close()``; also a context
        manager.

    Raises:
        OSError: If the port cannot be bound.
        ValueError: If an override is invalid.
    """
    config = (config or SimulatorConfig(port=0)).replace(**overrides)
    simulator = Simulator(config, clock=clock or time.monotonic)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"], box["port"] = loop.run_until_complete(_start_site(simulator))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="simulator", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]
    return SimulatorHandle(simulator, loop, box["runner"], box["port"], thread)


async def serve(config: SimulatorConfig, on_ready: Callable[[str], None] | None = None,
                stop: Awaitable[Any] | None = None) -> None:
    """Serves until ``stop`` completes, or until SIGINT/SIGTERM when ``stop`` is None.

    Args:
        config: What to simulate.
        on_ready: Called with the base URL once the port is bound.
        stop: An awaitable that ends the server.
    """
    simulator = Simulator(config)
    runner, port = await _start_site(simulator)
    try:
        if on_ready is not None:
            on_ready(_base_url(config.host, port))
        if stop is None:
            event = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, event.set)
            stop = event.wait()
        await stop
    finally:
        await runner.cleanup()
