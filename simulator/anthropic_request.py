"""Anthropic Messages API requests: validation in Anthropic's terms, and what the simulator needs.

``MessagesRequest(body)`` checks a decoded ``POST /v1/messages`` body the way Anthropic does
(unknown top-level fields, roles, content blocks, ``cache_control`` breakpoints, tools and
``tool_choice``), and raises ``InvalidRequest`` with Anthropic's ``"path: problem"`` message
otherwise. What it keeps: the prompt as cacheable blocks (``simulator.prompt_cache.Block``), its
input tokens (``simulator.tokens.messages_api_tokens``), an OpenAI-shaped view of the
conversation for the content generator and the markers, and the structured output asked for:

    request = MessagesRequest(json.loads(raw))
    request.input_tokens, request.blocks, request.tool, request.output_schema
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from simulator.prompt_cache import TTL_SECONDS, Block
from simulator.tokens import (TOKENS_PER_MESSAGE, TOKENS_PER_PROMPT, block_tokens, message_text,
                              tool_tokens)

#: The most ``cache_control`` breakpoints one request may carry.
MAX_BREAKPOINTS = 4

# Top-level fields of the Messages API. The simulator uses some and ignores the others, but
# refuses any other field, as Anthropic does ("Extra inputs are not permitted"): an OpenAI field
# such as response_format sent to this route is a client bug to surface, not to ignore.
_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "temperature", "tools", "tool_choice",
    "cache_control", "output_config", "stop_sequences", "stream", "metadata", "top_k", "top_p",
    "thinking", "service_tier", "container", "inference_geo", "speed", "diagnostics",
    "context_management", "mcp_servers",
})
_BLOCK_TYPES = frozenset({
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "server_tool_use", "web_search_tool_result", "container_upload",
})
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


class InvalidRequest(Exception):
    """A request Anthropic answers with 400 ``invalid_request_error``; the message is its text."""


def _check_type(value: Any, kinds: type | tuple[type, ...], where: str, expected: str) -> None:
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise InvalidRequest(f"{where}: Input should be {expected}")
    if not isinstance(value, kinds):
        raise InvalidRequest(f"{where}: Input should be {expected}")


def _strip(block: Mapping[str, Any]) -> dict[str, Any]:
    """The block without ``cache_control``: what the cache and the content key compare."""
    return {k: v for k, v in block.items() if k != "cache_control"}


def _ttl(block: Any, where: str) -> float | None:
    """The block's breakpoint TTL in seconds, None when it has no ``cache_control``."""
    if not isinstance(block, Mapping) or block.get("cache_control") is None:
        return None
    control = block["cache_control"]
    where = f"{where}.cache_control" if where else "cache_control"
    _check_type(control, dict, where, "a valid dictionary")
    if control.get("type") != "ephemeral":
        raise InvalidRequest(f"{where}.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise InvalidRequest(f"{where}.ttl: Input should be '5m' or '1h'")
    return TTL_SECONDS[ttl]


def _content_block(block: Any, where: str) -> None:
    _check_type(block, dict, where, "a valid dictionary")
    kind = block.get("type")
    if kind not in _BLOCK_TYPES:
        raise InvalidRequest(f"{where}.type: Input tag '{kind}' found using 'type' does not match "
                             f"any of the expected tags: {', '.join(sorted(_BLOCK_TYPES))}")
    if kind == "text":
        if "text" not in block:
            raise InvalidRequest(f"{where}.text: Field required")
        _check_type(block["text"], str, f"{where}.text", "a valid string")
        if not block["text"]:
            raise InvalidRequest("messages: text content blocks must be non-empty")


class MessagesRequest:
    """A validated Messages API request.

    Args:
        body: The decoded JSON body.
        require_max_tokens: False for ``/v1/messages/count_tokens``, which has no ``max_tokens``.

    Raises:
        InvalidRequest: If the body does not follow Anthropic's request schema.

    Attributes:
        model: The model id.
        max_tokens: The output cap (0 when not required and absent).
        blocks: The prompt's cacheable blocks: tools, system blocks, message blocks, in order.
        input_tokens: All input tokens: the blocks' tokens plus the per-prompt ones.
        view: The conversation as OpenAI-shaped messages (system first), without
            ``cache_control``: the key of the content, the markers and the attempt counters.
        text: The system prompt's and the messages' text, for the markers.
        tool: The tool the answer must call (``tool_choice`` any or tool), else None.
        output_schema: ``output_config.format``'s JSON schema, else None.
    """

    __slots__ = ("blocks", "input_tokens", "max_tokens", "model", "output_schema", "text", "tool",
                 "view")

    def __init__(self, body: Any, require_max_tokens: bool = True):
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        for name in body:
            if name not in _FIELDS:
                raise InvalidRequest(f"{name}: Extra inputs are not permitted")
        for name in ("model", "messages") + (("max_tokens",) if require_max_tokens else ()):
            if name not in body:
                raise InvalidRequest(f"{name}: Field required")
        self.model = body["model"]
        _check_type(self.model, str, "model", "a valid string")
        if not self.model:
            raise InvalidRequest("model: String should have at least 1 character")
        max_tokens = body.get("max_tokens", 0 if not require_max_tokens else None)
        _check_type(max_tokens, int, "max_tokens", "a valid integer")
        if require_max_tokens and max_tokens < 1:
            raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")
        self.max_tokens = max_tokens
        temperature = body.get("temperature")
        if temperature is not None:
            _check_type(temperature, (int, float), "temperature", "a valid number")
            if not 0 <= temperature <= 1:
                raise InvalidRequest("temperature: Input should be between 0 and 1")
        if body.get("stream"):
            raise InvalidRequest("stream: the simulator does not stream; send stream: false")
        tools = self._tools(body.get("tools"))
        self.tool = self._tool_choice(body.get("tool_choice"), tools)
        self.output_schema = self._output_schema(body.get("output_config"))
        self.blocks: list[Block] = []
        ttls: list[tuple[float, str]] = []

        def add(kind: str, block: Mapping[str, Any], tokens: int, where: str) -> None:
            key = json.dumps([kind, _strip(block)], sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode("utf-8")
            ttl = _ttl(block, where)
            if ttl is not None:
                ttls.append((ttl, where))
            self.blocks.append(Block(key, tokens, ttl))

        for i, tool in enumerate(tools):
            add("tool", tool, tool_tokens(tool), f"tools.{i}")
        system = body.get("system")
        self.view: list[dict[str, Any]] = []
        texts = []
        blocks = self._system_blocks(system) if system is not None and system != "" else []
        if blocks:
            for i, block in enumerate(blocks):
                add("system", block, block_tokens(block) + (TOKENS_PER_MESSAGE if i == 0 else 0),
                    f"system.{i}")
            content = system if isinstance(system, str) else [_strip(b) for b in blocks]
            self.view.append({"role": "system", "content": content})
            texts.append(message_text(content))
        messages = body["messages"]
        _check_type(messages, list, "messages", "a valid list")
        if not messages:
            raise InvalidRequest("messages: at least one message is required")
        for i, message in enumerate(messages):
            where = f"messages.{i}"
            _check_type(message, dict, where, "a valid dictionary")
            role = message.get("role")
            if role not in ("user", "assistant"):
                raise InvalidRequest(f"{where}.role: Input should be 'user' or 'assistant'")
            if "content" not in message:
                raise InvalidRequest(f"{where}.content: Field required")
            content = message["content"]
            if isinstance(content, str):
                blocks = [{"type": "text", "text": content}] if content else []
            else:
                _check_type(content, list, f"{where}.content", "a valid string or list")
                blocks = content
            last_assistant = i == len(messages) - 1 and role == "assistant"
            if not blocks and not last_assistant:
                raise InvalidRequest(f"{where}: all messages must have non-empty content except "
                                     "for the optional final assistant message")
            for j, block in enumerate(blocks):
                _content_block(block, f"{where}.content.{j}")
                add(role, {**block, "first": j == 0},
                    block_tokens(block) + (TOKENS_PER_MESSAGE if j == 0 else 0),
                    f"{where}.content.{j}")
            if not blocks:  # an empty final assistant turn still costs its role tokens
                self.blocks.append(Block(json.dumps([role, None]).encode(), TOKENS_PER_MESSAGE))
            stripped = content if isinstance(content, str) else [_strip(b) for b in blocks]
            self.view.append({"role": role, "content": stripped})
            texts.append(message_text(stripped))
        top = body.get("cache_control")
        if top is not None:
            # Top-level cache_control puts the breakpoint on the last cacheable block.
            ttl = _ttl({"cache_control": top}, "")
            if ttl is not None and self.blocks:
                last = self.blocks[-1]
                self.blocks[-1] = Block(last.key, last.tokens, ttl)
                ttls.append((ttl, "cache_control"))
        self._check_breakpoints(ttls)
        self.input_tokens = TOKENS_PER_PROMPT + sum(block.tokens for block in self.blocks)
        self.text = "\n".join(texts)

    @staticmethod
    def _system_blocks(system: Any) -> list[dict[str, Any]]:
        if isinstance(system, str):
            return [{"type": "text", "text": system}]
        _check_type(system, list, "system", "a valid string or list")
        for i, block in enumerate(system):
            _check_type(block, dict, f"system.{i}", "a valid dictionary")
            if block.get("type") != "text":
                raise InvalidRequest(f"system.{i}.type: Input should be 'text'")
            _content_block(block, f"system.{i}")
        return system

    @staticmethod
    def _tools(tools: Any) -> list[dict[str, Any]]:
        if tools is None:
            return []
        _check_type(tools, list, "tools", "a valid list")
        names = set()
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            _check_type(tool, dict, where, "a valid dictionary")
            name = tool.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                raise InvalidRequest(f"{where}.name: String should match pattern "
                                     "'^[a-zA-Z0-9_-]{1,128}$'")
            if name in names:
                raise InvalidRequest(f"tools: Tool names must be unique. Duplicate: '{name}'")
            names.add(name)
            if tool.get("type", "custom") != "custom":
                continue  # a server tool: accepted, never called by the simulator
            schema = tool.get("input_schema")
            if schema is None:
                raise InvalidRequest(f"{where}.custom.input_schema: Field required")
            _check_type(schema, dict, f"{where}.custom.input_schema", "a valid dictionary")
            if schema.get("type") != "object":
                raise InvalidRequest(f"{where}.custom.input_schema.type: Input should be 'object'")
        return tools

    @staticmethod
    def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
        if choice is None:
            return None
        _check_type(choice, dict, "tool_choice", "a valid dictionary")
        kind = choice.get("type")
        if kind not in _TOOL_CHOICES:
            raise InvalidRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or "
                                 "'none'")
        if kind in ("auto", "none"):
            return None  # the simulator answers in text when the model may choose
        custom = [t for t in tools if t.get("type", "custom") == "custom"]
        if not tools:
            raise InvalidRequest("tool_choice: tool_choice may only be specified while "
                                 "providing tools.")
        if kind == "any":
            if not custom:
                raise InvalidRequest("tool_choice: the simulator can only call custom tools")
            return custom[0]
        name = choice.get("name")
        for tool in custom:
            if tool["name"] == name:
                return tool
        raise InvalidRequest(f"tool_choice.name: Tool '{name}' not found in provided tools")

    @staticmethod
    def _output_schema(config: Any) -> dict[str, Any] | None:
        if config is None:
            return None
        _check_type(config, dict, "output_config", "a valid dictionary")
        fmt = config.get("format")
        if fmt is None:
            return None
        _check_type(fmt, dict, "output_config.format", "a valid dictionary")
        if fmt.get("type") != "json_schema":
            raise InvalidRequest("output_config.format.type: Input should be 'json_schema'")
        schema = fmt.get("schema")
        if schema is None:
            raise InvalidRequest("output_config.format.schema: Field required")
        _check_type(schema, dict, "output_config.format.schema", "a valid dictionary")
        return schema

    @staticmethod
    def _check_breakpoints(ttls: list[tuple[float, str]]) -> None:
        if len(ttls) > MAX_BREAKPOINTS:
            raise InvalidRequest(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may "
                                 f"be provided. Found {len(ttls)}.")
        shortest = max(TTL_SECONDS.values())
        for ttl, where in ttls:
            if ttl > shortest:
                raise InvalidRequest(f"{where}: a ttl='1h' cache_control block must not come "
                                     "after a ttl='5m' cache_control block. Note that blocks are "
                                     "processed in the following order: `tools`, `system`, "
                                     "`messages`.")
            shortest = min(shortest, ttl)
