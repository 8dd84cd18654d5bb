"""A graceful stop that the driver requests and the LLM step obeys.

The driver owns one :class:`StopSignal` per process and hands it to ``CallModel`` (injected:
transforms never import the driver). On :meth:`~StopSignal.request_stop` no new request is sent:
a ticket not yet sent, or waiting for a retry or for the rate limiter, becomes a dead letter
``interrupted`` (replayable: it carries its input). Requests in flight may finish until
:meth:`~StopSignal.request_abort`, which cancels them too. The pipeline itself runs to its end,
so every record is written.

Only DoFns running in the driver's process can see it (the FnApiRunner's default mode); on other
runners the signal a worker builds is never set.

Example::

    stop = StopSignal()
    unsubscribe = stop.subscribe(lambda kind: print(kind))   # "stop", then maybe "abort"
    stop.request_stop(); stop.stopping()  # True
"""

from __future__ import annotations

import threading
from typing import Callable, List

STOP = "stop"
ABORT = "abort"


class StopSignal:
    """Thread-safe stop and abort flags with listeners."""

    def __init__(self):
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._listeners: List[Callable[[str], None]] = []

    def stopping(self) -> bool:
        """True once a stop was requested: send nothing new."""
        return self._stop.is_set()

    def aborting(self) -> bool:
        """True once in-flight requests must be cancelled too."""
        return self._abort.is_set()

    def request_stop(self) -> None:
        """Stops sending new requests (idempotent)."""
        if not self._stop.is_set():
            self._stop.set()
            self._notify(STOP)

    def request_abort(self) -> None:
        """Also cancels requests in flight (implies a stop; idempotent)."""
        self.request_stop()
        if not self._abort.is_set():
            self._abort.set()
            self._notify(ABORT)

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Calls ``listener(kind)`` on each stop/abort (at once for those already requested).

        Returns:
          A function that unsubscribes.
        """
        with self._lock:
            self._listeners.append(listener)
        for kind, flag in ((STOP, self._stop), (ABORT, self._abort)):
            if flag.is_set():
                listener(kind)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def reset(self) -> None:
        """Clears both flags (a second run in the same process, or a test)."""
        self._stop.clear()
        self._abort.clear()

    def _notify(self, kind: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(kind)
            except Exception:  # noqa: BLE001 - one listener's failure must not block the stop
                pass
