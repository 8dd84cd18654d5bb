"""Anthropic's Messages API on the simulator: ``POST /v1/messages``, as Anthropic answers it.

The same simulator that speaks OpenAI's chat completions answers the official ``anthropic``
client, whose base URL is the server's root (the SDK appends ``/v1/messages`` itself):

    from simulator import start

    with start(anthropic_rpm=50, anthropic_itpm=40_000, anthropic_otpm=8_000) as sim:
        client = anthropic.Anthropic(base_url=sim.root_url, api_key="test", max_retries=0)
        message = client.messages.create(model="claude-sonnet-4-6", max_tokens=256,
                                         messages=[{"role": "user", "content": "Hi"}])

What is modelled, and how (simulator/README.md has the reference):

* the request and answer shapes, the key (``x-api-key``, or ``Authorization: Bearer`` as the SDK
  sends it) and the required ``anthropic-version`` header,
  Anthropic's error body ``{"type": "error", "error": {"type", "message"}, "request_id"}``;
* structured output: a forced tool (``tool_choice`` ``tool`` or ``any``) is answered with a
  ``tool_use`` block whose input fits the tool's ``input_schema``; ``output_config.format``
  ``json_schema`` with JSON text (``simulator.content`` makes both, as for OpenAI);
* limits as three token buckets (``simulator.buckets``) and the ``anthropic-ratelimit-*`` headers;
* the prompt cache (``simulator.prompt_cache``): cache reads are not charged to the input bucket;
* faults: the simulator's random draw and markers, in Anthropic's statuses (503 becomes 529
  ``overloaded_error``, a content filter a ``refusal``).

``GET /v1/models`` and ``GET /v1/models/{id}`` answer in Anthropic's shape when the request has an
``anthropic-version`` header, and so does a 404 for an unknown path (see ``by_version``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from simulator.anthropic_request import InvalidRequest, MessagesRequest
from simulator.buckets import MessagesLimiter
from simulator.config import SimulatorConfig
from simulator.content import (content_rng, instance_for_schema, invalid_instance_text,
                               request_key, support_reply, truncate_to_tokens)
from simulator.faults import (NO_MARKERS, AttemptCounter, FaultDraw, Markers, conversation_root,
                              find_markers)
from simulator.limits import Decision
from simulator.prompt_cache import PromptCache
from simulator.stats import STATUS_RESET, Stats
from simulator.tokens import count_tokens

_LOG = logging.getLogger(__name__)

#: Model ids listed (Anthropic's shape) without ``--models``; then any model name is served.
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON = "application/json"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_STATUS_CANCELLED = 499
# HTTP status -> Anthropic's error type.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                502: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_OVERLOADED = "Overloaded"
# The random fault kinds (simulator.faults) that answer with an error, as Anthropic would.
_FAULT_ERRORS = {"500": (500, "Internal server error"), "502": (502, "Bad gateway"),
                 "503": (529, _OVERLOADED)}
_BUCKET_WORDS = {"requests": "requests", "input_tokens": "input tokens",
                 "output_tokens": "output tokens"}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _display_name(model_id: str) -> str:
    """ "claude-sonnet-4-6" -> "Claude Sonnet 4.6"."""
    words = [w for w in model_id.split("-") if not w.isdigit()]
    digits = [w for w in model_id.split("-") if w.isdigit() and len(w) < 8]
    name = " ".join(w.capitalize() for w in words)
    return f"{name} {'.'.join(digits)}" if digits else name


def _model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": _display_name(model_id),
            "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}


def _invalid_tool_input(schema: dict[str, Any], attempt: int) -> dict[str, Any]:
    """A tool input that does not fit ``schema`` (the ``INVALID_OUTPUT_N_TIMES`` marker).

    A tool input is always a JSON object, so unlike OpenAI's text there is no truncated JSON:
    even attempts leave out every property (the required ones are missing), odd attempts give
    each property an object where the schema asks for something else.
    """
    if attempt % 2 == 0:
        return {}
    properties = schema.get("properties") or {}
    return {name: {"invalid": True} for name in properties} or {"invalid": True}


@dataclasses.dataclass
class _Outcome:
    """What one messages request ended with, for the stats and the output bucket."""

    status: int = _STATUS_CANCELLED
    input_tokens: int = 0  # every input token: uncached, written and read
    output_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reserved: int = 0  # output tokens charged on admission (0 if not admitted)
    completed: bool = True  # False for a 200 that carried no message (the malformed fault)


class AnthropicRoutes:
    """The Anthropic handlers and their state: three token buckets and the prompt cache.

    The random faults, the marker attempt counters, the latency and the stats are the
    simulator's own, shared with its OpenAI routes (one draw per request, whichever route).

    Args:
        config: What to simulate (``anthropic_*`` limits, faults, ``api_key``, ``models``, ...).
        stats: The simulator's counters.
        faults: The simulator's random fault draw.
        latency: Seconds of latency for a reply of N output tokens.
        fail_attempts: Attempt counts of ``FAIL_N_TIMES`` (per exact request).
        invalid_attempts: Attempt counts of ``INVALID_OUTPUT_N_TIMES`` (per conversation).
        clock: Monotonic seconds, for the buckets and the cache's TTLs.
        wall_clock: Epoch seconds, for the ``*-reset`` headers.
    """

    def __init__(self, config: SimulatorConfig, stats: Stats, faults: FaultDraw,
                 latency: Callable[[int], float], fail_attempts: AttemptCounter,
                 invalid_attempts: AttemptCounter, clock: Callable[[], float],
                 wall_clock: Callable[[], float]):
        self.config = config
        self.limiter = MessagesLimiter(config.anthropic_rpm, config.anthropic_itpm,
                                       config.anthropic_otpm, clock)
        self.cache = PromptCache(clock)
        self._stats = stats
        self._faults = faults
        self._latency = latency
        self._fail_attempts = fail_attempts
        self._invalid_attempts = invalid_attempts
        self._wall_clock = wall_clock
        self._served = frozenset(config.served_models())
        self._ids = itertools.count(1)
        self._id_prefix = f"{random.Random(f'{config.seed}:anthropic').getrandbits(40):010x}"

    def add_routes(self, app: web.Application) -> None:
        """Registers ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``."""
        app.router.add_post("/v1/messages", self.handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self.handle_count_tokens)

    @staticmethod
    def by_version(openai: Handler, anthropic: Handler) -> Handler:
        """Returns a handler that serves ``anthropic`` to requests carrying an
        ``anthropic-version`` header (what every Anthropic client sends) and ``openai`` to the
        others, for the paths both APIs share."""
        async def handler(request: web.Request) -> web.StreamResponse:
            if "anthropic-version" in request.headers:
                return await anthropic(request)
            return await openai(request)
        return handler

    def reset(self) -> None:
        """Fills the buckets and empties the prompt cache."""
        self.limiter.reset()
        self.cache.clear()

    # ---- responses ---------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_01{self._id_prefix}{next(self._ids):014d}"

    def _headers(self, limits: bool = True) -> dict[str, str]:
        headers = self.limiter.headers(self._wall_clock()) if limits else {}
        headers["request-id"] = self._next_id("req")
        headers["Content-Type"] = _JSON
        return headers

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None,
               limits: bool = True) -> web.Response:
        headers = headers or self._headers(limits)
        body = {"type": "error", "error": {"type": _ERROR_TYPES[status], "message": message},
                "request_id": headers["request-id"]}
        return web.Response(status=status, body=_dumps(body), headers=headers)

    def _rate_limited(self, decision: Decision, model: str) -> web.Response:
        headers = self._headers()
        what = _BUCKET_WORDS[decision.kind]
        if math.isinf(decision.retry_after):
            wait = decision.window_secs
            message = (f"This request would exceed the rate limit for your organization "
                       f"(org-simulator) of {decision.limit:,} {what} per minute for {model}: "
                       f"it asks for {decision.requested:,} at once, so it can never be served. "
                       f"Please reduce the prompt length or the maximum tokens requested.")
        else:
            wait = decision.retry_after
            message = (f"This request would exceed the rate limit for your organization "
                       f"(org-simulator) of {decision.limit:,} {what} per minute for {model}. "
                       f"You can see the response headers for current usage. Please try again "
                       f"in {wait:.1f}s.")
        # Whole seconds, rounded up: a client that waits this long fits (the epsilon keeps float
        # noise such as 2.0000000001 from adding a second).
        headers["retry-after"] = str(max(1, math.ceil(wait - 1e-9)))
        return self._error(429, message, headers=headers)

    def _check_headers(self, request: web.Request) -> web.Response | None:
        """401 without the key (with ``--api_key``), 400 without a valid ``anthropic-version``.

        The key is read from ``x-api-key``, else from ``Authorization: Bearer``.
        """
        if self.config.api_key:
            # Anthropic's header is x-api-key; the SDK (2.x) sends its key as a Bearer token.
            key = request.headers.get("x-api-key")
            bearer = request.headers.get("Authorization", "")
            if key is None and bearer.startswith("Bearer "):
                key = bearer[len("Bearer "):]
            if key is None:
                return self._error(401, "x-api-key header is required", limits=False)
            if key != self.config.api_key:  # never echo it: it may be a real key
                return self._error(401, "invalid x-api-key", limits=False)
        version = request.headers.get("anthropic-version")
        if version is None:
            return self._error(400, "anthropic-version: header is required", limits=False)
        if not _VERSION.fullmatch(version):
            return self._error(400, f'anthropic-version: "{version[:40]}" is not a valid '
                                    'version', limits=False)
        return None

    async def _read(self, request: web.Request,
                    require_max_tokens: bool) -> MessagesRequest | web.Response:
        try:
            raw = await request.read()
        except web.HTTPException as exc:  # 413: over the server's client_max_size
            return self._error(413 if exc.status == 413 else 400, exc.reason)
        try:
            return MessagesRequest(json.loads(raw), require_max_tokens)
        except (ValueError, RecursionError):
            return self._error(400, "The request body is not valid JSON.")
        except InvalidRequest as exc:
            return self._error(400, str(exc))

    async def _reset_connection(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=self._headers())
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"id":"msg_reset","type":"message","role":"assis')
        if request.transport is not None:
            request.transport.abort()
        return response

    # ---- handlers ----------------------------------------------------------------------------

    async def handle_messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: counts the request, never lets an exception escape."""
        stats = self._stats
        in_flight = stats.enter()
        outcome = _Outcome()
        try:
            return await self._messages(request, in_flight, outcome)
        except Exception:  # noqa: BLE001 - nothing a client sends may take the server down
            _LOG.exception("unexpected error handling an Anthropic message")
            stats.fault("internal_error")
            outcome.status = 500
            return self._error(500, "Internal server error")
        finally:
            stats.leave()
            ok = outcome.status == 200 and outcome.completed
            stats.record(outcome.status, outcome.input_tokens, outcome.output_tokens,
                         completed=outcome.completed)
            stats.anthropic_requests += 1
            if ok:
                stats.cache_creation_input_tokens += outcome.cache_creation
                stats.cache_read_input_tokens += outcome.cache_read
            if outcome.reserved:  # admitted, then failed: it produced no output
                self.limiter.settle_output(outcome.reserved, 0)

    async def _messages(self, request: web.Request, in_flight: int,
                        outcome: _Outcome) -> web.StreamResponse:
        config = self.config
        if config.max_concurrency and in_flight > config.max_concurrency:
            outcome.status = 529
            return self._error(529, _OVERLOADED)
        refused = self._check_headers(request)
        if refused is not None:
            outcome.status = refused.status
            return refused
        message = await self._read(request, require_max_tokens=True)
        if isinstance(message, web.Response):
            outcome.status = message.status
            return message
        refused = self._refusal(message)
        if refused is not None:
            outcome.status = refused.status
            return refused
        markers = find_markers(message.text)
        if markers.not_found:
            self._stats.fault("not_found")
            outcome.status = 404
            return self._error(404, "The resource this request refers to does not exist.")

        plan = self.cache.plan(message.model, message.blocks)
        # Cache reads are free for the input bucket; cache writes are charged like any input.
        decision = self.limiter.acquire(message.input_tokens - plan.read_tokens,
                                        message.max_tokens)
        if not decision.allowed:
            outcome.status = 429
            return self._rate_limited(decision, message.model)
        outcome.reserved = message.max_tokens

        fault = self._faults.draw()
        if fault is not None and fault != "content_filter":
            return await self._inject(fault, request, outcome)
        key = request_key(message.model, message.view) if markers is not NO_MARKERS else ""
        if (fault is None and markers.fail_n_times
                and self._fail_attempts.take(key) < markers.fail_n_times):
            self._stats.fault("fail_n_times")
            outcome.status = 529
            return self._error(529, _OVERLOADED)
        # Anthropic has no content-filter error: the model refuses, in a 200.
        refusal = fault == "content_filter" or markers.content_filter
        if refusal:
            self._stats.fault("content_filter")
        try:
            content, stop_reason = ([], "refusal") if refusal else self._content(message, markers)
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            # A schema is the only client input that reaches content generation.
            outcome.status = 400
            return self._error(400, f"Invalid JSON schema: {type(exc).__name__}: {exc}")
        n_output = self._output_tokens(content, message.max_tokens)
        delay = self._latency(n_output)
        if delay > 0:
            await asyncio.sleep(delay)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=_STATUS_CANCELLED)  # the client went away: no message
        self.cache.commit(plan)
        # Output was estimated at max_tokens on admission; settle it to what was produced before
        # the headers are written, so that they show what is really left.
        self.limiter.settle_output(outcome.reserved, n_output)
        outcome.reserved = 0
        outcome.status, outcome.output_tokens = 200, n_output
        outcome.input_tokens = message.input_tokens
        outcome.cache_read, outcome.cache_creation = plan.read_tokens, plan.creation_tokens
        body = self._message(message, plan, content, stop_reason, n_output)
        return web.Response(body=_dumps(body), headers=self._headers())

    def _message(self, message: MessagesRequest, plan: Any, content: list[Any],
                 stop_reason: str, n_output: int) -> dict[str, Any]:
        """The ``message`` object of an answer (online and batch answers share it)."""
        n_input = message.input_tokens - plan.read_tokens - plan.creation_tokens
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": message.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": n_input,
                "cache_creation_input_tokens": plan.creation_tokens,
                "cache_read_input_tokens": plan.read_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": plan.write_5m_tokens,
                                   "ephemeral_1h_input_tokens": plan.write_1h_tokens},
                "output_tokens": n_output,
                "service_tier": "standard",
            },
        }

    def answer(self, body: Any, created: int) -> tuple[int, dict[str, Any]]:
        """Answers one Message Batches request as ``POST /v1/messages`` would answer the same
        params, without limits, latency or random faults (the markers and the prompt cache
        apply: a batch's requests read and write the same cache as online ones).

        Args:
            body: The request's ``params``.
            created: Epoch seconds of the answer (unused: a message has no timestamp).

        Returns:
            (HTTP status, body): a ``message``, or Anthropic's error body.
        """
        del created
        try:
            message = MessagesRequest(body, require_max_tokens=True)
            if self._served and message.model not in self._served:
                return 404, self._error_body(404, f"model: {message.model}")
            if message.input_tokens > self.config.context_window:
                return 400, self._error_body(400, f"prompt is too long: {message.input_tokens} "
                                                  f"tokens > {self.config.context_window} maximum")
            markers = find_markers(message.text)
            if markers.not_found:
                return 404, self._error_body(404, "The resource this request refers to does not "
                                                  "exist.")
            key = request_key(message.model, message.view) if markers is not NO_MARKERS else ""
            if markers.fail_n_times and self._fail_attempts.take(key) < markers.fail_n_times:
                return 529, self._error_body(529, _OVERLOADED)
            plan = self.cache.plan(message.model, message.blocks)
            content, stop_reason = (([], "refusal") if markers.content_filter
                                    else self._content(message, markers))
            n_output = self._output_tokens(content, message.max_tokens)
            self.cache.commit(plan)
            return 200, self._message(message, plan, content, stop_reason, n_output)
        except InvalidRequest as exc:
            return 400, self._error_body(400, str(exc))
        except Exception:  # noqa: BLE001 - one bad request must not break the batch
            _LOG.exception("unexpected error answering a message batch request")
            return 500, self._error_body(500, "Internal server error")

    # ---- for the Message Batches routes (simulator.anthropic_batch) -------------------------

    def check_request(self, request: web.Request) -> web.Response | None:
        """The key and ``anthropic-version`` checks of every Anthropic route (None: passed)."""
        return self._check_headers(request)

    def error_response(self, status: int, message: str) -> web.Response:
        """Anthropic's error body and headers, without the rate-limit headers."""
        return self._error(status, message, limits=False)

    def id_headers(self) -> dict[str, str]:
        """A response's ``request-id`` header."""
        return {"request-id": self._next_id("req")}

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": _ERROR_TYPES[status], "message": message}}

    def _refusal(self, message: MessagesRequest) -> web.Response | None:
        """The refusals that come before any budget: an unserved model, a prompt too long."""
        if self._served and message.model not in self._served:
            return self._error(404, f"model: {message.model}")
        window = self.config.context_window
        if message.input_tokens > window:
            return self._error(400, f"prompt is too long: {message.input_tokens} tokens > "
                                    f"{window} maximum")
        return None

    async def _inject(self, fault: str, request: web.Request,
                      outcome: _Outcome) -> web.StreamResponse:
        """Answers with a drawn random fault, in Anthropic's statuses."""
        if fault in _FAULT_ERRORS:
            status, text = _FAULT_ERRORS[fault]
            self._stats.fault(str(status))
            outcome.status = status
            return self._error(status, text)
        self._stats.fault(fault)
        if fault == "hang":
            await asyncio.sleep(self.config.hang_secs)
            outcome.status = 504
            return self._error(504, "Request timed out")
        if fault == "reset":
            outcome.status = STATUS_RESET
            return await self._reset_connection(request)
        # malformed: a 200 whose JSON stops half-way, as from a proxy that cut the body.
        outcome.status, outcome.completed = 200, False
        return web.Response(body=b'{"id":"msg_malformed","type":"message","role":"assistant",'
                                 b'"content":[{"type":"text","te', headers=self._headers())

    def _content(self, message: MessagesRequest, markers: Markers) -> tuple[list[Any], str]:
        """The answer's content blocks and stop reason."""
        rng = content_rng(request_key(message.model, message.view), None)
        invalid_attempt = None
        if markers.invalid_output_n_times:
            # Per conversation, so that a repair follow-up is the conversation's next attempt.
            attempt = self._invalid_attempts.take(
                request_key(message.model, conversation_root(message.view)))
            if attempt < markers.invalid_output_n_times:
                self._stats.fault("invalid_output")
                invalid_attempt = attempt
        if message.tool is not None:
            schema = message.tool["input_schema"]
            value = (instance_for_schema(schema, rng, message.view) if invalid_attempt is None
                     else _invalid_tool_input(schema, invalid_attempt))
            if count_tokens(json.dumps(value, ensure_ascii=False)) > message.max_tokens:
                value, stop_reason = {}, "max_tokens"  # cut before its input was complete
            else:
                stop_reason = "tool_use"
            return [{"type": "tool_use", "id": self._next_id("toolu"),
                     "name": message.tool["name"], "input": value}], stop_reason
        if message.output_schema is not None:
            text = json.dumps(instance_for_schema(message.output_schema, rng, message.view),
                              ensure_ascii=False)
        else:
            text = support_reply(message.view, rng)
        if invalid_attempt is not None:
            text = invalid_instance_text(text, message.output_schema, invalid_attempt)
        text, truncated = truncate_to_tokens(text, message.max_tokens)
        return [{"type": "text", "text": text}], "max_tokens" if truncated else "end_turn"

    @staticmethod
    def _output_tokens(content: list[dict[str, Any]], max_tokens: int) -> int:
        total = 0
        for block in content:
            if block["type"] == "text":
                total += count_tokens(block["text"])
            elif block["input"]:
                total += count_tokens(json.dumps(block["input"], ensure_ascii=False))
            else:
                total += max_tokens  # a tool call cut at max_tokens spent all of them
        return min(total, max_tokens)

    async def handle_count_tokens(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, as a message would count
        them (no limits, no stats)."""
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        parsed = await self._read(request, require_max_tokens=False)
        if not isinstance(parsed, MessagesRequest):
            return parsed
        if self._served and parsed.model not in self._served:
            return self._error(404, f"model: {parsed.model}", limits=False)
        return web.Response(body=_dumps({"input_tokens": parsed.input_tokens}),
                            headers=self._headers(limits=False))

    async def handle_models(self, request: web.Request) -> web.Response:
        """``GET /v1/models`` in Anthropic's shape, with ``limit`` and ``after_id`` paging."""
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        ids = list(self.config.served_models() or MODELS)
        after = request.query.get("after_id")
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self._error(400, "limit: Input should be between 1 and 1000", limits=False)
        page = ids[:limit]
        body = {"data": [_model(m) for m in page], "has_more": len(ids) > limit,
                "first_id": page[0] if page else None, "last_id": page[-1] if page else None}
        return web.Response(body=_dumps(body), headers=self._headers(limits=False))

    async def handle_model(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{id}``: a served model (any id without ``--models``), else 404."""
        refused = self._check_headers(request)
        if refused is not None:
            return refused
        model = request.match_info["model"]
        if self._served and model not in self._served:
            return self._error(404, f"model: {model}", limits=False)
        return web.Response(body=_dumps(_model(model)), headers=self._headers(limits=False))

    async def handle_not_found(self, request: web.Request) -> web.Response:
        """Any other path, asked by an Anthropic client: Anthropic's 404 (``unknown_urls``)."""
        self._stats.unknown_urls += 1
        return self._error(404, "Not Found", limits=False)
