"""The checks a Batch API input file gets when a batch is created, and its token estimate.

An input file is JSONL, one request per line:

    {"custom_id": "t-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [...], "max_tokens": 200}}

Only the envelope is checked here (JSON, ``custom_id`` unique, ``method``, ``url`` equal to the
batch's endpoint, one ``model`` for the whole file, at most 50,000 lines). A body the chat endpoint
would refuse is not a validation error: that line is answered with the same 400 the online
endpoint gives, in the batch's error file, as OpenAI does.

    parsed = parse_input(data, "/v1/chat/completions", default_max_tokens=256)
    if parsed.errors:
        ...  # the batch fails; parsed.errors are OpenAI ``BatchError`` dicts
    parsed.tokens  # what the batch counts against an enqueued-token limit
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from simulator.tokens import prompt_tokens

#: Most request lines one batch may hold, as at OpenAI.
MAX_LINES = 50_000
#: Most errors listed in ``errors.data`` of a batch that failed validation.
MAX_ERRORS = 10


def batch_error(code: str, message: str, line: int | None = None,
                param: str | None = None) -> dict[str, Any]:
    """Returns one entry of a failed batch's ``errors.data`` (OpenAI's ``BatchError``).

    Args:
        code: The machine-readable reason, e.g. "invalid_json_line".
        message: The human-readable explanation.
        line: The 1-based line of the input file at fault, if one is.
        param: The field at fault, if one is.

    Returns:
        ``{"code", "message", "param", "line"}``.
    """
    return {"code": code, "message": message, "param": param, "line": line}


@dataclasses.dataclass(frozen=True)
class InputLine:
    """One request line that passed the envelope checks.

    Attributes:
        number: Its 1-based line number in the file.
        custom_id: The caller's id, echoed in the output.
        body: The chat completion request body (not yet checked).
        tokens: Prompt tokens plus max output tokens, for the enqueued-token limit.
    """

    number: int
    custom_id: str
    body: dict[str, Any]
    tokens: int


@dataclasses.dataclass(frozen=True)
class ParsedInput:
    """The outcome of ``parse_input``.

    Attributes:
        lines: The request lines, in file order (empty when the count is over the limit).
        model: The one model of the file, or None if none could be read.
        errors: The validation errors; empty when the file is valid.
        count: Non-blank lines in the file (what ``batch_requests`` counts).
    """

    lines: tuple[InputLine, ...]
    model: str | None
    errors: tuple[dict[str, Any], ...]
    count: int

    @property
    def tokens(self) -> int:
        """The batch's tokens: the sum over its lines."""
        return sum(line.tokens for line in self.lines)


def line_tokens(body: Mapping[str, Any], default_max_tokens: int) -> int:
    """Estimates what a request line counts against an enqueued-token limit.

    Args:
        body: The line's request body.
        default_max_tokens: Output tokens assumed when the body sets no maximum.

    Returns:
        ``prompt_tokens(messages)`` plus ``max_completion_tokens``, else ``max_tokens``, else
        ``default_max_tokens``; the same cost the online rate limiter charges.
    """
    messages = body.get("messages")
    prompt = (prompt_tokens(m for m in messages if isinstance(m, Mapping))
              if isinstance(messages, list) else 0)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return prompt + value
    return prompt + default_max_tokens


def _check_line(number: int, text: str, endpoint: str, seen: set[str],
                errors: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """Checks one line's envelope; appends its errors and returns (custom_id, body) if valid."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        errors.append(batch_error("invalid_json_line", "This line is not parseable as valid "
                                  "JSON.", number))
        return None
    if not isinstance(record, dict):
        errors.append(batch_error("invalid_json_line", "This line is not a JSON object.",
                                  number))
        return None
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        errors.append(batch_error("missing_required_parameter", "Each request needs a "
                                  "non-empty string 'custom_id'.", number, "custom_id"))
        return None
    if custom_id in seen:
        errors.append(batch_error("duplicate_custom_id", "The custom_id for this request is a "
                                  "duplicate of another request. The custom_id parameter must "
                                  "be unique for each individual request in a batch.", number,
                                  "custom_id"))
        return None
    seen.add(custom_id)
    if record.get("method") != "POST":
        errors.append(batch_error("invalid_method", "Only the POST method is supported for "
                                  "batch requests.", number, "method"))
        return None
    if record.get("url") != endpoint:
        errors.append(batch_error("invalid_url", f"The URL provided for this request does not "
                                  f"match the batch endpoint {endpoint}.", number, "url"))
        return None
    body = record.get("body")
    if not isinstance(body, dict):
        errors.append(batch_error("missing_required_parameter", "Each request needs a JSON "
                                  "object 'body'.", number, "body"))
        return None
    if not isinstance(body.get("model"), str) or not body["model"]:
        errors.append(batch_error("missing_required_parameter", "Each request body needs a "
                                  "'model'.", number, "body.model"))
        return None
    return custom_id, body


def parse_input(data: bytes, endpoint: str, default_max_tokens: int) -> ParsedInput:
    """Parses and checks an uploaded batch input file.

    Args:
        data: The file's bytes (UTF-8 JSONL; blank lines are skipped).
        endpoint: The batch's endpoint; every line's ``url`` must equal it.
        default_max_tokens: For ``line_tokens``.

    Returns:
        The lines, the model and the errors. Error codes: ``invalid_file_encoding``,
        ``empty_file``, ``too_many_lines``, ``invalid_json_line``, ``missing_required_parameter``,
        ``duplicate_custom_id``, ``invalid_method``, ``invalid_url``, ``mismatched_model``; at
        most ``MAX_ERRORS`` are listed.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ParsedInput((), None, (batch_error("invalid_file_encoding", "The input file is "
                                                  "not valid UTF-8."),), 0)
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    numbered = [(i, raw.rstrip("\r")) for i, raw in enumerate(text.split("\n"), 1)
                if raw.strip()]
    count = len(numbered)
    if not numbered:
        return ParsedInput((), None, (batch_error("empty_file", "The input file has no "
                                                  "requests."),), 0)
    if count > MAX_LINES:
        return ParsedInput((), None, (batch_error(
            "too_many_lines", f"The input file has {count} requests; a batch may hold at most "
                              f"{MAX_LINES}."),), count)
    errors: list[dict[str, Any]] = []
    lines: list[InputLine] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in numbered:
        checked = _check_line(number, raw, endpoint, seen, errors)
        if checked is None:
            continue
        custom_id, body = checked
        if model is None:
            model = body["model"]
        elif body["model"] != model:
            errors.append(batch_error("mismatched_model", f"All requests in a batch must use "
                                      f"the same model: this line uses '{body['model']}', "
                                      f"earlier lines '{model}'.", number, "body.model"))
            continue
        lines.append(InputLine(number, custom_id, body, line_tokens(body, default_max_tokens)))
    return ParsedInput(tuple(lines), model, tuple(errors[:MAX_ERRORS]), count)
