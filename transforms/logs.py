"""Structured logging: one line per event, as ``key=value`` text or JSON lines.

Code that has something worth knowing to say calls :func:`event` with an event name and fields;
the driver picks the rendering once (``pipeline/logs.py``, ``--log_format text|json``). The
fields travel on the log record (``tf_event``, ``tf_fields``) for the JSON rendering; the message
is the ``key=value`` text.

Example::

    event(_LOG, logging.INFO, "start", input="in.jsonl", output="out/run1")
    # text: 2025-01-01T12:00:00.000Z INFO ticketflow start input=in.jsonl output=out/run1
    # json: {"ts": "2025-01-01T12:00:00.000Z", "level": "INFO", "logger": "ticketflow",
    #        "event": "start", "input": "in.jsonl", "output": "out/run1"}
"""

from __future__ import annotations

import json
import logging
from typing import Any


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Logs one event with its fields (rendered by the formatter the driver installed)."""
    if logger.isEnabledFor(level):
        text = " ".join([name] + [f"{k}={_text_value(v)}" for k, v in fields.items()])
        logger.log(level, text, extra={"tf_event": name, "tf_fields": fields})


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        value = round(value, 3)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text or "=" in text:
        return json.dumps(text)
    return text
