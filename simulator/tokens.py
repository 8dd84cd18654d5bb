"""Token counting shared by the simulator and the pipeline.

The simulator does not run a real tokenizer. Both sides agree on a cheap, deterministic
approximation instead, so that budgets computed by the pipeline match what the simulator charges:

    >>> count_tokens("Cannot log in")
    4
    >>> prompt_tokens([{"role": "user", "content": "Cannot log in"}])
    10

Anthropic's Messages API is counted the same way, block by block (``messages_api_tokens``): a
system prompt counts as one more message, and a tool definition by its JSON. The same system
prompt and user message cost the same tokens through either API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Tokens charged per message for the role and separators, as in OpenAI's cookbook estimate.
TOKENS_PER_MESSAGE = 3
#: Tokens charged once per prompt for priming the assistant's reply.
TOKENS_PER_PROMPT = 3


def count_tokens(text: str) -> int:
    """Returns the approximate token count of ``text``: one token per four characters, rounded up.

    Args:
        text: Any string; the empty string has zero tokens.

    Returns:
        ``ceil(len(text) / 4)``.
    """
    return (len(text) + 3) // 4


def message_text(content: Any) -> str:
    """Returns the text of a chat message's ``content``.

    Args:
        content: A string, a list of content parts (``{"type": "text", "text": ...}``), or None.

    Returns:
        The text, with the text parts of a list joined by newlines; "" for None or no text.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Returns the prompt token count of a list of chat messages.

    Args:
        messages: Chat messages, each a mapping with a ``content``.

    Returns:
        The sum of ``count_tokens(content)`` over the messages, plus 3 per message, plus 3.
    """
    total = TOKENS_PER_PROMPT
    for message in messages:
        total += count_tokens(message_text(message.get("content"))) + TOKENS_PER_MESSAGE
    return total


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def block_tokens(block: Any) -> int:
    """Returns the tokens of one content block of Anthropic's Messages API.

    Args:
        block: A string (a message's plain content), or a block: ``text`` counts its text,
            ``tool_use`` its name and JSON input, ``tool_result`` the text of its content; any
            other block its JSON without ``cache_control``.

    Returns:
        The token count (``cache_control`` never counts).
    """
    if isinstance(block, str):
        return count_tokens(block)
    if not isinstance(block, Mapping):
        return 0
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return count_tokens(text) if isinstance(text, str) else 0
    if kind == "tool_use":
        return count_tokens(str(block.get("name", ""))) + count_tokens(
            _canonical_json(block.get("input", {})))
    if kind == "tool_result":
        return count_tokens(message_text(block.get("content")))
    return count_tokens(_canonical_json({k: v for k, v in block.items()
                                         if k != "cache_control"}))


def tool_tokens(tool: Mapping[str, Any]) -> int:
    """Returns the tokens of one tool definition: its JSON without ``cache_control``."""
    return count_tokens(_canonical_json({k: v for k, v in tool.items() if k != "cache_control"}))


def messages_api_tokens(messages: Iterable[Mapping[str, Any]], system: Any = None,
                        tools: Sequence[Mapping[str, Any]] = ()) -> int:
    """Returns the input tokens of an Anthropic Messages API request.

    Args:
        messages: The request's messages (content a string or a list of blocks).
        system: Its system prompt: a string, a list of text blocks, or None.
        tools: Its tool definitions.

    Returns:
        The tools' tokens, plus the system prompt's blocks + 3 when there is one, plus each
        message's blocks + 3, plus 3: ``prompt_tokens`` of the same text sent to OpenAI.
    """
    total = TOKENS_PER_PROMPT + sum(tool_tokens(tool) for tool in tools)
    if system:
        blocks = [system] if isinstance(system, str) else system
        total += TOKENS_PER_MESSAGE + sum(block_tokens(block) for block in blocks)
    for message in messages:
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else (content or ())
        total += TOKENS_PER_MESSAGE + sum(block_tokens(block) for block in blocks)
    return total
