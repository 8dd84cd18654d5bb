"""Google's Gemini API on the simulator: ``POST /v1beta/models/{model}:generateContent``.

The same simulator that speaks OpenAI's chat completions answers the official ``google-genai``
client, whose base URL is the server's root (the SDK appends ``/v1beta/models/...`` itself):

    from google import genai
    from simulator import start

    with start(gemini_rpm=10, gemini_tpm=250_000, gemini_rpd=250) as sim:
        client = genai.Client(api_key="test", http_options={"base_url": sim.root_url})
        answer = client.models.generate_content(model="gemini-2.5-flash", contents="Hi")

What is modelled, and how (simulator/README.md has the reference):

* the request and answer shapes (``candidates``, ``finishReason``, ``usageMetadata``), the key
  (``x-goog-api-key`` header or ``?key=``) and Google's error body
  ``{"error": {"code", "message", "status", "details"}}``;
* structured output: ``responseMimeType`` ``application/json`` with ``responseSchema`` (or
  ``responseJsonSchema``) is answered with JSON text that fits it (``simulator.content``);
* limits (``simulator.gemini_request.GeminiLimiter``): requests and input tokens per minute,
  requests per day; a 429 ``RESOURCE_EXHAUSTED`` carries a ``google.rpc.RetryInfo``
  ``retryDelay``. No rate-limit headers: Gemini sends none;
* implicit caching (``simulator.prompt_cache``): a prefix seen before, at least the model's
  minimum long, is reported as ``cachedContentTokenCount`` until its TTL;
* faults: the simulator's random draw and markers in Google's statuses (503 ``UNAVAILABLE``,
  500 ``INTERNAL``, a hang ends in 504 ``DEADLINE_EXCEEDED``, a content filter is a 200 whose
  candidate has ``finishReason`` ``SAFETY``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import math
import random
from collections.abc import Callable
from typing import Any

from aiohttp import web

from simulator.config import SimulatorConfig
from simulator.content import (content_rng, instance_for_schema, invalid_instance_text,
                               json_object_reply, request_key, support_reply, truncate_to_tokens)
from simulator.faults import (NO_MARKERS, AttemptCounter, FaultDraw, conversation_root,
                              find_markers)
from simulator.gemini_request import GeminiLimiter, GenerateRequest, InvalidArgument
from simulator.limits import Decision
from simulator.prompt_cache import PromptCache
from simulator.stats import STATUS_RESET, Stats
from simulator.tokens import count_tokens

_LOG = logging.getLogger(__name__)

_JSON = "application/json"
_STATUS_CANCELLED = 499
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_FAULT_ERRORS = {"500": (500, "An internal error has occurred. Please retry or report in "
                               "https://developers.generativeai.google/guide/troubleshooting"),
                 "502": (502, "Bad gateway."),
                 "503": (503, "The model is overloaded. Please try again later.")}
_QUOTA_IDS = {"requests": "GenerateRequestsPerMinutePerProjectPerModel",
              "tokens": "GenerateContentInputTokensPerModelPerMinute",
              "requests_per_day": "GenerateRequestsPerDayPerProjectPerModel"}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(status: int, message: str, details: list[dict[str, Any]] | None = None,
               name: str | None = None) -> dict[str, Any]:
    """Google's error body for an HTTP status (``name``: the ``google.rpc`` code's name)."""
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": name or _STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


@dataclasses.dataclass
class _Outcome:
    status: int = _STATUS_CANCELLED
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    completed: bool = True


class GeminiRoutes:
    """The Gemini handler and its state: the limits and the implicit cache.

    The random faults, the marker attempt counters, the latency and the stats are the
    simulator's own, shared with its other routes (one draw per request, whichever route).

    Args:
        config: What to simulate (``gemini_*`` limits, faults, ``api_key``, ``models``, ...).
        stats: The simulator's counters.
        faults: The simulator's random fault draw.
        latency: Seconds of latency for a reply of N output tokens.
        fail_attempts: Attempt counts of ``FAIL_N_TIMES`` (per exact request).
        invalid_attempts: Attempt counts of ``INVALID_OUTPUT_N_TIMES`` (per conversation).
        clock: Monotonic seconds, for the limits and the cache's TTL.
    """

    def __init__(self, config: SimulatorConfig, stats: Stats, faults: FaultDraw,
                 latency: Callable[[int], float], fail_attempts: AttemptCounter,
                 invalid_attempts: AttemptCounter, clock: Callable[[], float]):
        self.config = config
        self.limiter = GeminiLimiter(config.gemini_rpm, config.gemini_tpm, config.gemini_rpd,
                                     clock)
        self.cache = PromptCache(clock)
        self._stats = stats
        self._faults = faults
        self._latency = latency
        self._fail_attempts = fail_attempts
        self._invalid_attempts = invalid_attempts
        self._served = frozenset(config.served_models())
        self._ids = itertools.count(1)
        self._id_prefix = f"{random.Random(f'{config.seed}:gemini').getrandbits(40):010x}"

    def add_routes(self, app: web.Application) -> None:
        """Registers ``POST /{v1beta,v1}/models/{model}:generateContent``."""
        for version in ("v1beta", "v1"):
            app.router.add_post(f"/{version}/models/{{model:[^/:]+}}:generateContent",
                                self.handle_generate)

    def reset(self) -> None:
        """Refills the limits and empties the implicit cache."""
        self.limiter.reset()
        self.cache.clear()

    # ---- responses ---------------------------------------------------------------------------

    def _response_id(self) -> str:
        return f"sim{self._id_prefix}{next(self._ids):010d}"

    @staticmethod
    def _error(status: int, message: str, details: list[dict[str, Any]] | None = None,
               name: str | None = None) -> web.Response:
        return web.Response(status=status, body=_dumps(error_body(status, message, details,
                                                                  name)),
                            content_type=_JSON)

    def _rate_limited(self, decision: Decision, model: str) -> web.Response:
        wait = decision.window_secs if math.isinf(decision.retry_after) else decision.retry_after
        quota = _QUOTA_IDS[decision.kind]
        message = (f"You exceeded your current quota, please check your plan and billing "
                   f"details. Quota exceeded for metric: generativelanguage.googleapis.com/"
                   f"{decision.kind}, limit: {decision.limit}, model: {model}. Please retry in "
                   f"{wait:.1f}s.")
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": f"generativelanguage.googleapis.com/{decision.kind}",
                             "quotaId": quota, "quotaDimensions": {"model": model},
                             "quotaValue": str(decision.limit)}]},
            # Whole seconds, rounded up: a client that waits this long fits.
            {"@type": _RETRY_INFO, "retryDelay": f"{max(1, math.ceil(wait - 1e-9))}s"}]
        return self._error(429, message, details)

    def _check_key(self, request: web.Request) -> web.Response | None:
        """403 without a key, 401 with a wrong one (only with ``--api_key``). Google itself
        answers a wrong key with 400 ``INVALID_ARGUMENT`` and the same ``API_KEY_INVALID``
        reason; clients must treat both as a bad key."""
        if not self.config.api_key:
            return None
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return self._error(403, "Method doesn't allow unregistered callers (callers without "
                                    "established identity). Please use API Key or other form "
                                    "of API consumer identity to call this API.")
        if key != self.config.api_key:  # never echo it: it may be a real key
            return self._error(401, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
        return None

    async def _reset_connection(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"candidates":[{"content":{"parts":[{"text":"Hel')
        if request.transport is not None:
            request.transport.abort()
        return response

    # ---- the handler -------------------------------------------------------------------------

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1beta/models/{model}:generateContent``: never lets an exception escape."""
        stats = self._stats
        in_flight = stats.enter()
        outcome = _Outcome()
        try:
            return await self._generate(request, in_flight, outcome)
        except Exception:  # noqa: BLE001 - nothing a client sends may take the server down
            _LOG.exception("unexpected error handling a Gemini request")
            stats.fault("internal_error")
            outcome.status = 500
            return self._error(500, "An internal error has occurred.")
        finally:
            stats.leave()
            stats.record(outcome.status, outcome.input_tokens, outcome.output_tokens,
                         completed=outcome.completed)
            stats.gemini_requests += 1
            if outcome.status == 200 and outcome.completed:
                stats.cache_read_input_tokens += outcome.cached

    async def _generate(self, request: web.Request, in_flight: int,
                        outcome: _Outcome) -> web.StreamResponse:
        config = self.config
        if config.max_concurrency and in_flight > config.max_concurrency:
            outcome.status = 503
            return self._error(*_FAULT_ERRORS["503"])
        refused = self._check_key(request)
        if refused is None:
            try:
                raw = await request.read()
                ask = GenerateRequest(request.match_info["model"], json.loads(raw))
            except web.HTTPException as exc:  # 413: over the server's client_max_size
                refused = self._error(400 if exc.status != 413 else 413, exc.reason)
            except (ValueError, RecursionError):
                refused = self._error(400, "Invalid JSON payload received.")
            except InvalidArgument as exc:
                refused = self._error(400, str(exc))
        if refused is None:
            refused = self._refusal(ask)
        if refused is not None:
            outcome.status = refused.status
            return refused
        markers = find_markers(ask.text)
        if markers.not_found:
            self._stats.fault("not_found")
            outcome.status = 404
            return self._error(404, "Requested entity was not found.")
        decision = self.limiter.acquire(ask.input_tokens)
        if not decision.allowed:
            outcome.status = 429
            return self._rate_limited(decision, ask.model)
        plan = self.cache.plan(ask.model, ask.blocks)

        fault = self._faults.draw()
        if fault is not None and fault != "content_filter":
            return await self._inject(fault, request, outcome)
        key = request_key(ask.model, ask.view) if markers is not NO_MARKERS else ""
        if (fault is None and markers.fail_n_times
                and self._fail_attempts.take(key) < markers.fail_n_times):
            self._stats.fault("fail_n_times")
            outcome.status = 503
            return self._error(*_FAULT_ERRORS["503"])
        blocked = fault == "content_filter" or markers.content_filter
        if blocked:
            self._stats.fault("content_filter")
        try:
            body, n_output = self._answer_body(ask, markers, blocked, plan.read_tokens)
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            outcome.status = 400
            return self._error(400, f"* GenerateContentRequest.generation_config."
                                    f"response_schema: {type(exc).__name__}: {exc}")
        delay = self._latency(n_output)
        if delay > 0:
            await asyncio.sleep(delay)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=_STATUS_CANCELLED)  # the client went away: no answer
        self.cache.commit(plan)
        outcome.status, outcome.cached = 200, plan.read_tokens
        outcome.input_tokens, outcome.output_tokens = ask.input_tokens, n_output
        return web.Response(body=_dumps(body), content_type=_JSON)

    def _answer_body(self, ask: GenerateRequest, markers: Any, blocked: bool,
                     cached: int) -> tuple[dict[str, Any], int]:
        """A ``generateContent`` answer and its output tokens (raises on a schema it cannot
        answer)."""
        text, finish = ("", "SAFETY") if blocked else self._content(ask, markers)
        n_output = count_tokens(text)
        usage: dict[str, Any] = {"promptTokenCount": ask.input_tokens,
                                 "candidatesTokenCount": n_output,
                                 "totalTokenCount": ask.input_tokens + n_output,
                                 "promptTokensDetails": [{"modality": "TEXT",
                                                          "tokenCount": ask.input_tokens}]}
        if cached:
            usage["cachedContentTokenCount"] = cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}] if text else [],
                                                 "role": "model"},
                                     "finishReason": finish, "index": 0}
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": ask.model,
                "responseId": self._response_id()}, n_output

    def answer(self, request: Any, created: int) -> tuple[int, dict[str, Any]]:
        """Answers one batch request as ``generateContent`` would, without limits, latency or
        random faults (the markers and the implicit cache apply).

        Args:
            request: ``{"model": ..., "request": <generateContent body>}``.
            created: Epoch seconds of the answer (unused).

        Returns:
            (HTTP status, body): an answer, or Google's error body.
        """
        del created
        try:
            ask = GenerateRequest(request["model"], request["request"])
            refused = self._refusal(ask)
            if refused is not None:
                return refused.status, json.loads(refused.body)
            markers = find_markers(ask.text)
            if markers.not_found:
                return 404, error_body(404, "Requested entity was not found.")
            key = request_key(ask.model, ask.view) if markers is not NO_MARKERS else ""
            if markers.fail_n_times and self._fail_attempts.take(key) < markers.fail_n_times:
                return 503, error_body(*_FAULT_ERRORS["503"])
            plan = self.cache.plan(ask.model, ask.blocks)
            body, _ = self._answer_body(ask, markers, markers.content_filter, plan.read_tokens)
            self.cache.commit(plan)
            return 200, body
        except InvalidArgument as exc:
            return 400, error_body(400, str(exc))
        except (ValueError, TypeError, LookupError, RecursionError) as exc:
            return 400, error_body(400, f"* GenerateContentRequest: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - one bad request must not break the batch
            _LOG.exception("unexpected error answering a Gemini batch request")
            return 500, error_body(500, "An internal error has occurred.")

    def _refusal(self, ask: GenerateRequest) -> web.Response | None:
        """The refusals that come before any quota: an unserved model, a prompt too long."""
        if self._served and ask.model not in self._served:
            return self._error(404, f"models/{ask.model} is not found for API version v1beta, "
                                    "or is not supported for generateContent.")
        window = self.config.context_window
        if ask.input_tokens > window:
            return self._error(400, f"The input token count ({ask.input_tokens}) exceeds the "
                                    f"maximum number of tokens allowed ({window}).")
        return None

    async def _inject(self, fault: str, request: web.Request,
                      outcome: _Outcome) -> web.StreamResponse:
        """Answers with a drawn random fault, in Google's statuses."""
        self._stats.fault(fault)
        if fault in _FAULT_ERRORS:
            outcome.status = _FAULT_ERRORS[fault][0]
            return self._error(*_FAULT_ERRORS[fault])
        if fault == "hang":
            await asyncio.sleep(self.config.hang_secs)
            outcome.status = 504
            return self._error(504, "Deadline expired before operation could complete.")
        if fault == "reset":
            outcome.status = STATUS_RESET
            return await self._reset_connection(request)
        # malformed: a 200 whose JSON stops half-way, as from a proxy that cut the body.
        outcome.status, outcome.completed = 200, False
        return web.Response(body=b'{"candidates":[{"content":{"parts":[{"text":"Hel',
                            content_type=_JSON)

    def _content(self, ask: GenerateRequest, markers: Any) -> tuple[str, str]:
        """The answer's text and finish reason."""
        rng = content_rng(request_key(ask.model, ask.view), None)
        if ask.schema is not None:
            text = json.dumps(instance_for_schema(ask.schema, rng, ask.view), ensure_ascii=False)
        elif ask.json_answer:
            text = json.dumps(json_object_reply(ask.view, rng), ensure_ascii=False)
        else:
            text = support_reply(ask.view, rng)
        if markers.invalid_output_n_times:
            # Per conversation, so that a repair follow-up is the conversation's next attempt.
            attempt = self._invalid_attempts.take(
                request_key(ask.model, conversation_root(ask.view)))
            if attempt < markers.invalid_output_n_times:
                self._stats.fault("invalid_output")
                text = invalid_instance_text(text, ask.schema, attempt)
        if ask.max_tokens is not None:
            text, truncated = truncate_to_tokens(text, ask.max_tokens)
            if truncated:
                return text, "MAX_TOKENS"
        return text, "STOP"
