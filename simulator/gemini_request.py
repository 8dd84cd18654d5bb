"""Gemini ``generateContent`` requests and limits: validation in Google's terms, and what the
simulator needs.

``GenerateRequest(model, body)`` checks a decoded ``POST /v1beta/models/{model}:generateContent``
body the way the Gemini API does (unknown fields, roles, parts, ``generationConfig``), and raises
``InvalidArgument`` with a Google-style message otherwise. What it keeps: the prompt as blocks for
the implicit cache (every part ends a cacheable prefix), its input tokens, an OpenAI-shaped view
of the conversation for the content generator and the markers, and the JSON schema asked for.

``GeminiLimiter`` holds Gemini's three limits: requests and input tokens per minute (token
buckets from ``simulator.buckets``, refilled continuously) and requests per day (a fixed day
counted from the simulator's start or its last reset; Google's resets at midnight Pacific time):

    limits = GeminiLimiter(rpm=10, tpm=250_000, rpd=250, clock=clock)
    decision = limits.acquire(input_tokens=1200)   # simulator.limits.Decision
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from simulator.buckets import TokenBucket
from simulator.limits import Decision
from simulator.prompt_cache import TTL_SECONDS, Block
from simulator.tokens import TOKENS_PER_MESSAGE, TOKENS_PER_PROMPT, count_tokens

#: How long an implicitly cached prefix lives after its last use (Google does not publish it).
IMPLICIT_TTL = TTL_SECONDS["5m"]
_DAY = 86_400.0
_FIELDS = frozenset({"contents", "systemInstruction", "system_instruction", "generationConfig",
                     "generation_config", "safetySettings", "safety_settings", "tools",
                     "toolConfig", "tool_config", "cachedContent", "cached_content", "labels",
                     "model"})
_CONFIG_FIELDS = frozenset({
    "maxOutputTokens", "temperature", "topP", "topK", "candidateCount", "stopSequences",
    "responseMimeType", "responseSchema", "responseJsonSchema", "_responseJsonSchema", "seed",
    "presencePenalty", "frequencyPenalty", "thinkingConfig", "responseLogprobs", "logprobs",
    "responseModalities", "mediaResolution", "speechConfig", "enableEnhancedCivicAnswers"})
_MIME_TYPES = frozenset({"text/plain", "application/json", "text/x.enum"})
_ROLES = {"user": "user", "model": "assistant"}


class InvalidArgument(Exception):
    """A request the Gemini API answers with 400 ``INVALID_ARGUMENT``; the message is its text."""


def _unknown(name: str, where: str = "") -> InvalidArgument:
    at = f" at '{where}'" if where else ""
    return InvalidArgument(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot '
                           'find field.')


def json_schema(schema: Any) -> dict[str, Any]:
    """A ``responseSchema`` (OpenAPI subset, upper-case types) as the JSON Schema the content
    generator reads."""
    if not isinstance(schema, Mapping):
        raise InvalidArgument("generation_config.response_schema: must be an object")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if not isinstance(value, str):
                raise InvalidArgument(f"Invalid value at 'generation_config.response_schema."
                                      f"type' ({value!r})")
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, Mapping):
            out["properties"] = {name: json_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out["items"] = json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out["anyOf"] = [json_schema(sub) for sub in value]
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    return out


def _parts(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"Invalid value at '{where}': expected an object with 'parts'")
    for name in value:
        if name not in ("parts", "role"):
            raise _unknown(name, where)
    parts = value.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidArgument(f"* GenerateContentRequest.{where}.parts: contents.parts must not "
                              "be empty.")
    for i, part in enumerate(parts):
        if not isinstance(part, Mapping) or not part:
            raise InvalidArgument(f"* GenerateContentRequest.{where}.parts[{i}].data: required "
                                  "oneof field 'data' must have one initialized field")
        if "text" in part and not isinstance(part["text"], str):
            raise InvalidArgument(f"Invalid value at '{where}.parts[{i}].text' (TYPE_STRING)")
    return parts


def _part_text(part: Mapping[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) else json.dumps(part, sort_keys=True)


class GenerateRequest:
    """A validated ``generateContent`` request.

    Args:
        model: The model id from the path (``gemini-2.5-flash``; a ``models/`` prefix is dropped).
        body: The decoded JSON body.

    Raises:
        InvalidArgument: If the body does not follow the Gemini API's request schema.

    Attributes:
        model: The model id.
        max_tokens: ``maxOutputTokens``, or None.
        blocks: The prompt's blocks for the implicit cache: system parts, then content parts.
        input_tokens: All input tokens (``promptTokenCount``).
        view: The conversation as OpenAI-shaped messages (system first).
        text: The prompt's text, for the markers.
        schema: The JSON schema of a JSON answer (``responseSchema`` or ``responseJsonSchema``),
            else None.
        json_answer: Whether ``responseMimeType`` is ``application/json``.
    """

    __slots__ = ("blocks", "input_tokens", "json_answer", "max_tokens", "model", "schema",
                 "text", "view")

    def __init__(self, model: str, body: Any):
        if not isinstance(body, dict):
            raise InvalidArgument("Invalid JSON payload received. Expected an object.")
        for name in body:
            if name not in _FIELDS:
                raise _unknown(name)
        self.model = model.removeprefix("models/")
        if not self.model:
            raise InvalidArgument("* GenerateContentRequest.model: unexpected model name format")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise InvalidArgument("* GenerateContentRequest.contents: contents is not specified")
        self.blocks: list[Block] = []
        self.view: list[dict[str, Any]] = []
        texts = []
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system is not None:
            parts = _parts(system, "system_instruction")
            self._add("system", parts)
            content = "\n".join(_part_text(p) for p in parts)
            self.view.append({"role": "system", "content": content})
            texts.append(content)
        for i, item in enumerate(contents):
            where = f"contents[{i}]"
            parts = _parts(item, where)
            role = item.get("role", "user")
            if role not in _ROLES:
                raise InvalidArgument(f"Please use a valid role: user, model. (got {role!r} at "
                                      f"{where}.role)")
            self._add(role, parts)
            content = "\n".join(_part_text(p) for p in parts)
            self.view.append({"role": _ROLES[role], "content": content})
            texts.append(content)
        self.input_tokens = TOKENS_PER_PROMPT + sum(block.tokens for block in self.blocks)
        self.text = "\n".join(texts)
        self._config(body.get("generationConfig", body.get("generation_config")) or {})

    def _add(self, role: str, parts: list[dict[str, Any]]) -> None:
        for j, part in enumerate(parts):
            key = json.dumps([role, j == 0, part], sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode("utf-8")
            tokens = count_tokens(_part_text(part)) + (TOKENS_PER_MESSAGE if j == 0 else 0)
            # Implicit caching: every part boundary may end a cached prefix.
            self.blocks.append(Block(key, tokens, IMPLICIT_TTL))

    def _config(self, config: Any) -> None:
        if not isinstance(config, Mapping):
            raise InvalidArgument("Invalid value at 'generation_config': expected an object")
        for name in config:
            if name not in _CONFIG_FIELDS:
                raise _unknown(name, "generation_config")
        max_tokens = config.get("maxOutputTokens")
        if max_tokens is not None and (isinstance(max_tokens, bool)
                                       or not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidArgument("Invalid value at 'generation_config.max_output_tokens' "
                                  f"(TYPE_INT32), {max_tokens!r}: must be a positive integer")
        self.max_tokens = max_tokens
        temperature = config.get("temperature")
        if temperature is not None and (isinstance(temperature, bool)
                                        or not isinstance(temperature, (int, float))
                                        or not 0 <= temperature <= 2):
            raise InvalidArgument("* GenerateContentRequest.generation_config.temperature: "
                                  "temperature must be in the range [0.0, 2.0]")
        mime = config.get("responseMimeType", "text/plain")
        if mime not in _MIME_TYPES:
            raise InvalidArgument(f"* GenerateContentRequest.generation_config.response_mime_type:"
                                  f" allowed mimetypes are {', '.join(sorted(_MIME_TYPES))}")
        self.json_answer = mime == "application/json"
        raw = config.get("responseJsonSchema", config.get("_responseJsonSchema"))
        schema = config.get("responseSchema")
        if (schema is not None or raw is not None) and not self.json_answer:
            raise InvalidArgument("* GenerateContentRequest.generation_config.response_schema: "
                                  "response_mime_type must be application/json to use "
                                  "response_schema")
        if schema is not None and raw is not None:
            raise InvalidArgument("* GenerateContentRequest.generation_config: response_schema "
                                  "and response_json_schema cannot both be set")
        self.schema = json_schema(schema) if schema is not None else raw


class GeminiLimiter:
    """Gemini's limits: requests and input tokens per minute, requests per day.

    Args:
        rpm: Requests per minute; 0 = unlimited.
        tpm: Input tokens per minute (every prompt token, cached or not); 0 = unlimited.
        rpd: Requests per day; 0 = unlimited.
        clock: Monotonic seconds.
    """

    def __init__(self, rpm: int = 0, tpm: int = 0, rpd: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        now = clock()
        self._buckets = {kind: TokenBucket(limit, now)
                         for kind, limit in (("requests", rpm), ("tokens", tpm)) if limit > 0}
        self._rpd = rpd
        self._day_start = now
        self._day_used = 0

    def acquire(self, input_tokens: int) -> Decision:
        """Admits one request if every limit has room (and charges it), else rejects it.

        Returns:
            The decision; on rejection ``kind`` is ``requests``, ``tokens`` or
            ``requests_per_day``, ``retry_after`` the wait (inf if it can never fit).
        """
        now = self._clock()
        if self._rpd:
            if now - self._day_start >= _DAY:
                self._day_start += _DAY * math.floor((now - self._day_start) / _DAY)
                self._day_used = 0
            if self._day_used >= self._rpd:
                return Decision(allowed=False, kind="requests_per_day", window_secs=_DAY,
                                limit=self._rpd, used=self._day_used, requested=1,
                                retry_after=self._day_start + _DAY - now)
        costs = {"requests": 1, "tokens": input_tokens}
        worst: tuple[float, str] | None = None
        for kind, bucket in self._buckets.items():
            wait = bucket.wait(now, costs[kind])
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, kind)
        if worst is not None:
            wait, kind = worst
            bucket = self._buckets[kind]
            return Decision(allowed=False, kind=kind, window_secs=60.0,
                            limit=int(bucket.capacity),
                            used=math.ceil(bucket.capacity - bucket.level(now)),
                            requested=costs[kind], retry_after=wait)
        for kind, bucket in self._buckets.items():
            bucket.take(now, costs[kind])
        self._day_used += 1
        return _ALLOWED

    def reset(self) -> None:
        """Fills the buckets and starts a new day."""
        now = self._clock()
        for bucket in self._buckets.values():
            bucket.fill(now)
        self._day_start, self._day_used = now, 0


_ALLOWED = Decision(allowed=True)
