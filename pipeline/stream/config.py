"""The streaming flags, checked and frozen (``--input_subscription``, ``--watch``, the sinks).

A job is a streaming one when it reads a Pub/Sub subscription or watches ``--input``;
:func:`stream_config` returns None for a batch job, and raises the driver's ``ConfigError``
(passed in) with a one-line, actionable message for every mistake.

Example::

    stream = stream_config(options.view_as(TicketflowOptions), ConfigError)
    stream.source  # "pubsub" or "watch"
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Type

SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")

#: GroupIntoBatches' buffering in streaming when --max_buffering_secs is not given: a lone ticket
#: waits at most this long for others.
DEFAULT_MAX_BUFFERING_SECS = 1.0


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """A streaming job's sources and sinks.

    Attributes:
      subscription: The Pub/Sub subscription read (``source == "pubsub"``).
      watch_pattern: The pattern watched (``source == "watch"``).
      watch_interval_secs: How often it is matched.
      output_topic: Results are also published here.
      dead_letter_topic: Dead letters are also published here.
      window_secs: Longest a record waits for its file.
      local: The job runs on a local runner (the driver's stop file reaches its sources).
      stop_file: Set by the driver for a local run: its existence stops the sources.
    """
    subscription: Optional[str] = None
    watch_pattern: Optional[str] = None
    watch_interval_secs: float = 2.0
    output_topic: Optional[str] = None
    dead_letter_topic: Optional[str] = None
    window_secs: float = 60.0
    local: bool = True
    stop_file: Optional[str] = None

    @property
    def source(self) -> str:
        return "pubsub" if self.subscription else "watch"


def stream_config(o, error: Type[Exception], local: bool) -> Optional[StreamConfig]:
    """Checks the streaming flags of ``o`` (``TicketflowOptions``).

    Args:
      error: The exception type to raise (the driver's ``ConfigError``).
      local: Whether the runner is a local one.

    Returns:
      The configuration, or None for a batch job.

    Raises:
      error: with a one-line, actionable message.
    """
    if not o.input_subscription and not o.watch:
        for flag in ("output_topic", "dead_letter_topic"):
            if getattr(o, flag):
                raise error(f"--{flag} is for streaming jobs: add --input_subscription or "
                            "--watch.")
        return None
    if o.input_subscription and o.watch:
        raise error("--input_subscription and --watch are two sources: pass one.")
    if o.input_subscription and o.input:
        raise error("--input_subscription replaces --input: pass one (--watch --input PATTERN "
                    "watches a folder instead).")
    if o.input_subscription and not SUBSCRIPTION.match(o.input_subscription):
        raise error(f"--input_subscription must look like projects/P/subscriptions/S, got "
                    f"{o.input_subscription!r}.")
    if o.watch and not o.input:
        raise error("--watch needs --input: the pattern to watch, e.g. --input "
                    "'incoming/*.jsonl'.")
    for flag in ("output_topic", "dead_letter_topic"):
        value = getattr(o, flag)
        if value and not TOPIC.match(value):
            raise error(f"--{flag} must look like projects/P/topics/T, got {value!r}.")
    for flag in ("watch_interval_secs", "window_secs"):
        if not getattr(o, flag) > 0:
            raise error(f"--{flag} must be a positive number of seconds, got "
                        f"{getattr(o, flag):g}.")
    for flag in ("resume", "replay", "sample", "estimate"):
        if getattr(o, flag, None):
            raise error(f"--{flag} is for bounded inputs, not a streaming job (a ticket "
                        "delivered again is answered from --response_store).")
    if getattr(o, "api", "online") == "batch":
        raise error("--api batch is for bounded inputs: a streaming job answers online.")
    if o.output_format != "jsonl":
        raise error("a streaming job writes JSONL files (--output_format jsonl); publish to "
                    "--output_topic for other consumers.")
    return StreamConfig(subscription=o.input_subscription,
                        watch_pattern=o.input if o.watch else None,
                        watch_interval_secs=o.watch_interval_secs,
                        output_topic=o.output_topic, dead_letter_topic=o.dead_letter_topic,
                        window_secs=o.window_secs, local=local)
