"""The process-wide "stopping" state for a graceful stop (SIGINT / SIGTERM).

The driver's signal handler calls :func:`request_stop`: from then on no new request is sent; a
ticket not yet sent, or waiting for a retry or for the rate limiter, becomes a dead letter with
reason ``interrupted`` (replayable: it carries its input). Requests already in flight may finish
until the driver calls :func:`request_abort` (``--drain_secs`` later), which cancels them (they
become ``interrupted`` too). The pipeline itself runs to its end, so every record is written.

It is a module-level state, so it only reaches DoFns running in the driver's process (the
FnApiRunner's default mode); :class:`~transforms.llm.LlmEngine` subscribes with
:func:`subscribe` to learn of it at once on its event loop.

Example::

    unsubscribe = subscribe(lambda kind: print(kind))   # "stop", then maybe "abort"
    request_stop(); stopping()  # True
"""

from __future__ import annotations

import threading
from typing import Callable, List

STOP = "stop"
ABORT = "abort"

_lock = threading.RLock()
_stop = threading.Event()
_abort = threading.Event()
_listeners: List[Callable[[str], None]] = []


def stopping() -> bool:
    """True once a stop was requested: send nothing new."""
    return _stop.is_set()


def aborting() -> bool:
    """True once in-flight requests must be cancelled too."""
    return _abort.is_set()


def _notify(kind: str) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(kind)
        except Exception:  # noqa: BLE001 - one listener's failure must not block the stop
            pass


def request_stop() -> None:
    """Stops sending new requests (idempotent)."""
    if not _stop.is_set():
        _stop.set()
        _notify(STOP)


def request_abort() -> None:
    """Also cancels requests in flight (implies a stop; idempotent)."""
    request_stop()
    if not _abort.is_set():
        _abort.set()
        _notify(ABORT)


def subscribe(listener: Callable[[str], None]) -> Callable[[], None]:
    """Calls ``listener(kind)`` on each stop/abort (at once for those already requested).

    Returns:
      A function that unsubscribes.
    """
    with _lock:
        _listeners.append(listener)
    for kind, flag in ((STOP, _stop), (ABORT, _abort)):
        if flag.is_set():
            listener(kind)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)
    return unsubscribe


def reset() -> None:
    """Clears the state (tests, or a second run in the same process)."""
    _stop.clear()
    _abort.clear()
