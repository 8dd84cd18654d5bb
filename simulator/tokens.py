"""Token counting shared by the simulator and the pipeline.

The simulator does not run a real tokenizer. Both sides agree on a cheap, deterministic
approximation instead, so that budgets computed by the pipeline match what the simulator charges:

    >>> count_tokens("Cannot log in")
    4
    >>> prompt_tokens([{"role": "user", "content": "Cannot log in"}])
    10
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
