"""Log set-up of the driver: one line per event, as ``key=value`` text or JSON lines.

Workers log events with :func:`transforms.logs.event`; :func:`configure` installs the rendering
once, in the driver (``--log_format text|json``, ``--log_level``). Lines from other libraries
(Beam, httpx) keep their message, under ``message``.

Example::

    configure("INFO", "json", write=watch.write_log_line)
    # {"ts": "2025-01-01T12:00:00.000Z", "level": "INFO", "logger": "ticketflow",
    #  "event": "start", "input": "in.jsonl", "output": "out/run1"}
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Callable, Optional

from transforms import errors

LOG_FORMATS = ("text", "json")

# Beam's local runners (and the HTTP clients) are chatty at INFO; an operator wants our lines.
_NOISY_LOGGERS = ("apache_beam", "httpx", "httpx2", "httpcore", "openai", "aiohttp")


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER event key=value ...`` (other libraries' lines: their message)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name}
        name = getattr(record, "tf_event", None)
        if name is not None:
            out["event"] = name
            for key, value in getattr(record, "tf_fields", {}).items():
                out.setdefault(key, value)
        else:
            out["event"] = "log"
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _WriterHandler(logging.Handler):
    """Writes formatted lines through ``write`` (so a live progress bar can step aside)."""

    def __init__(self, write: Callable[[str], None]):
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


class _DropReportedErrors(logging.Filter):
    """Drops a runner's log of a job misconfiguration (with its traceback, or a worker's relayed
    as text): the driver reports it as one line on its own (exit code 2)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and errors.misconfiguration(exc) is not None:
            return False
        return not (record.name.startswith("apache_beam")
                    and "JobMisconfigured: " in record.getMessage())


def _stderr_write(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def configure(level: str = "INFO", log_format: str = "text",
              write: Optional[Callable[[str], None]] = None) -> None:
    """Installs the root handler: ``level`` for ticketflow, WARNING for noisy libraries.

    Args:
      level: DEBUG, INFO, WARNING or ERROR.
      log_format: ``text`` (key=value) or ``json`` (JSON lines).
      write: Where a finished line goes (default: stderr).
    """
    handler = _WriterHandler(write or _stderr_write)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_DropReportedErrors())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for name in ("ticketflow", "transforms", "pipeline"):
        logging.getLogger(name).setLevel(getattr(logging, level))
    if level != "DEBUG":
        for noisy in _NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
