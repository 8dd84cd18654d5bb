"""Watching a run from the driver: the live progress display and the graceful stop.

:class:`ProgressReporter` is a driver thread reading the process's live counters
(:data:`pipeline.progress.STATS`). Its mode:

* ``bar`` — a tqdm bar on stderr when stderr is a terminal: done / total, tickets/s, ETA, and
  tokens, retries, rate-limited, dead letters (and cost, when a ``cost`` function is given);
* ``lines`` — one ``progress`` log line every ``--progress_interval_secs`` when it is not;
* ``elapsed`` — the runner's workers do not run in this process (multi_processing, Dataflow,
  Flink, Prism...), so there is nothing live to count: it says so once, then logs the elapsed
  time every interval;
* ``off`` — ``--quiet``.

:class:`GracefulStop` turns SIGINT/SIGTERM into ``request_stop`` on the process's
:class:`~transforms.llm.stop.StopSignal` (and ``request_abort`` after ``--drain_secs``); a second
signal exits at once with code 130. The driver hands :func:`stop_signal` to ``CallModel``, which
is how DoFns running in this process learn of the stop.

Example::

    reporter = ProgressReporter(mode_for(live=True, quiet=False), interval_secs=10, total=300)
    with GracefulStop(drain_secs=30, on_stop=reporter.stopping), reporter:
        result = pipeline.run(); result.wait_until_finish()
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from pipeline import progress
from transforms.llm.stop import StopSignal
from transforms.logs import event

_LOG = logging.getLogger("ticketflow")

EXIT_INTERRUPTED = 130

MODE_BAR = "bar"
MODE_LINES = "lines"
MODE_ELAPSED = "elapsed"
MODE_OFF = "off"

_BAR_REFRESH_SECS = 0.5

# The stop signal of this process: set by GracefulStop, read by the DoFns that run here.
_STOP = StopSignal()


def stop_signal() -> StopSignal:
    """This process's stop signal (a module function, so that ``CallModel`` can pickle it)."""
    return _STOP

# The bar being drawn, if any: log lines are written through tqdm so they do not tear it.
_active_bar = None
_bar_lock = threading.RLock()


def write_log_line(line: str) -> None:
    """Writes one log line to stderr, above the progress bar when one is drawn."""
    with _bar_lock:
        bar = _active_bar
    if bar is not None:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        tqdm.write(line, file=sys.stderr)
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def live_counts_possible(runner: str, running_mode: Optional[str]) -> bool:
    """True when the DoFns run in the driver's process, so their live counters are visible here."""
    in_process = runner in ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner",
                            "SwitchingDirectRunner")
    return in_process and (running_mode or "in_memory") != "multi_processing"


def mode_for(live: bool, quiet: bool, stream=None) -> str:
    """The display mode for a run (see the module docstring)."""
    if quiet:
        return MODE_OFF
    if not live:
        return MODE_ELAPSED
    stream = stream or sys.stderr
    return MODE_BAR if getattr(stream, "isatty", lambda: False)() else MODE_LINES


class ProgressReporter:
    """Shows the run's progress until :meth:`close` (also a context manager).

    Args:
      mode: ``bar``, ``lines``, ``elapsed`` or ``off``.
      interval_secs: Seconds between two plain lines (``lines`` and ``elapsed`` modes).
      total: The number of records the input holds, when pre-counted; else the bar's total is
        the number read so far.
      runner: The runner's name, for the one-time notice of the ``elapsed`` mode.
      cost: Optional ``snapshot → dollars`` (None when unknown), shown when given.
      stats: The live counters (injected in tests).
      clock: Monotonic clock.
    """

    def __init__(self, mode: str, interval_secs: float = 10.0, total: Optional[int] = None,
                 runner: str = "", cost: Optional[Callable[[dict], Optional[float]]] = None,
                 stats: progress.ProgressStats = progress.STATS,
                 clock: Callable[[], float] = time.monotonic):
        self.mode = mode
        self._interval = max(0.1, interval_secs)
        self._total = total
        self._runner = runner
        self._cost = cost
        self._stats = stats
        self._clock = clock
        self._started = clock()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bar = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "ProgressReporter":
        global _active_bar
        self._started = self._clock()
        if self.mode == MODE_OFF:
            return self
        if self.mode == MODE_ELAPSED:
            event(_LOG, logging.INFO, "progress_unavailable", runner=self._runner,
                  note="the workers do not run in this process, so there is no live count; "
                  "logging the elapsed time instead")
        if self.mode == MODE_BAR:
            from tqdm import tqdm  # pylint: disable=import-outside-toplevel
            try:
                size = os.get_terminal_size(sys.stderr.fileno())
            except (OSError, ValueError):
                size = os.terminal_size((0, 0))
            # A terminal that reports no size (a fresh pty, some CI consoles) would make tqdm
            # draw nothing: assume 100 x 20.
            known = size.columns > 0 and size.lines > 0
            self._bar = tqdm(total=self._total, unit=" tickets", file=sys.stderr,
                             dynamic_ncols=known, ncols=None if known else 100,
                             nrows=None if known else 20, mininterval=0.2, smoothing=0.1)
            with _bar_lock:
                _active_bar = self._bar
        self._thread = threading.Thread(target=self._loop, name="ticketflow-progress",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops the thread and draws the final state (the bar stays on screen)."""
        global _active_bar
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._bar is not None:
            self._refresh_bar(self._stats.snapshot())
            with _bar_lock:
                _active_bar = None
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressReporter":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stopping(self) -> None:
        """Marks the display as stopping (graceful stop in progress)."""
        self._stopping = True

    # -- drawing ---------------------------------------------------------------------------
    def _loop(self) -> None:
        period = _BAR_REFRESH_SECS if self.mode == MODE_BAR else self._interval
        while not self._done.wait(period):
            try:
                snap = self._stats.snapshot()
                if self.mode == MODE_BAR:
                    self._refresh_bar(snap)
                elif self.mode == MODE_LINES:
                    self._line(snap)
                else:
                    event(_LOG, logging.INFO, "progress",
                          elapsed_secs=round(self._clock() - self._started, 1))
            except Exception:  # noqa: BLE001 - a display problem must never stop the job
                _LOG.debug("progress display failed", exc_info=True)

    def figures(self, snap: dict) -> dict:
        """What is shown: done, total, rate, ETA, tokens, retries, rate limited, dead letters."""
        done = int(snap.get("succeeded", 0) + snap.get("dead_lettered", 0))
        read = int(snap.get("tickets_read", 0))
        total = max(self._total or 0, read, done)
        elapsed = max(1e-6, self._clock() - self._started)
        rate = done / elapsed
        out = {
            "done": done,
            "total": total,
            "percent": round(100.0 * done / total, 1) if total else 0.0,
            "tickets_per_sec": round(rate, 2),
            "eta_secs": round((total - done) / rate, 1) if rate > 0 and total >= done else None,
            "tokens": int(snap.get("prompt_tokens", 0) + snap.get("completion_tokens", 0)),
            "retries": int(snap.get("retries", 0)),
            "rate_limited": int(snap.get("rate_limited", 0)),
            "dead_letters": int(snap.get("dead_lettered", 0)),
            "in_flight": int(snap.get("in_flight", 0)),
            "elapsed_secs": round(elapsed, 1),
        }
        if self._cost is not None:
            cost = self._cost(snap)
            if cost is not None:
                out["cost_usd"] = round(cost, 4)
        if self._stopping:
            out["state"] = "stopping"
        return out

    def _refresh_bar(self, snap: dict) -> None:
        bar = self._bar
        if bar is None:
            return
        f = self.figures(snap)
        if f["total"] and f["total"] != bar.total:
            bar.total = f["total"]
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        postfix = [f"tokens {tqdm.format_sizeof(f['tokens'])}", f"retries {f['retries']}",
                   f"429s {f['rate_limited']}", f"dead {f['dead_letters']}"]
        if "cost_usd" in f:
            postfix.append(f"${f['cost_usd']:.4f}")
        if "state" in f:
            postfix.append(f["state"].upper())
        bar.set_postfix_str(" ".join(postfix), refresh=False)
        if f["done"] > bar.n:
            bar.update(f["done"] - bar.n)
        else:
            bar.refresh()

    def _line(self, snap: dict) -> None:
        event(_LOG, logging.INFO, "progress", **self.figures(snap))


class GracefulStop:
    """SIGINT/SIGTERM handling for the duration of a run (a context manager, main thread only).

    First signal: stop sending (``request_stop``), let requests in flight finish for up
    to ``drain_secs`` (then ``request_abort`` cancels them), and let the pipeline end normally so
    every record is written. Second signal: exit at once with code 130.

    When ``graceful`` is False (the workers do not run in this process, so they cannot see the
    flag) the first signal exits at once with code 130, saying so.

    Args:
      drain_secs: How long requests in flight may take to finish after the first signal.
      graceful: Whether a graceful stop is possible on this runner.
      on_stop: Called once, on the first signal (e.g. to mark the progress display).
      exit_now: Called with the exit code to stop at once (``os._exit``; injected in tests).
      signal_: The stop signal to set (default: this process's, :func:`stop_signal`).
    """

    def __init__(self, drain_secs: float = 30.0, graceful: bool = True,
                 on_stop: Optional[Callable[[], None]] = None,
                 exit_now: Callable[[int], None] = os._exit,
                 signal_: Optional[StopSignal] = None):
        self._signal = signal_ or _STOP
        self._drain_secs = drain_secs
        self._graceful = graceful
        self._on_stop = on_stop
        self._exit_now = exit_now
        self._previous = {}
        self._timer: Optional[threading.Timer] = None
        self.signal_name: Optional[str] = None

    @property
    def interrupted(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> "GracefulStop":
        self._signal.reset()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            sys.stderr.write(f"\nticketflow: {name} again: stopping at once (exit 130); "
                             "records not yet written are lost.\n")
            sys.stderr.flush()
            self._exit_now(EXIT_INTERRUPTED)
            return
        self.signal_name = name
        if not self._graceful:
            sys.stderr.write(f"\nticketflow: {name}: a graceful stop is not possible on this "
                             "runner (its workers do not run in this process); stopping at once "
                             "(exit 130). A job on a remote service keeps running: cancel it "
                             "there.\n")
            sys.stderr.flush()
            self._exit_now(EXIT_INTERRUPTED)
            return
        self._signal.request_stop()
        # The rest (logging takes locks the interrupted main thread may hold) in a thread.
        threading.Thread(target=self._stop, args=(name,), name="ticketflow-stop",
                         daemon=True).start()

    def _stop(self, name: str) -> None:
        event(_LOG, logging.WARNING, "stopping", signal=name, drain_secs=self._drain_secs,
              note="no new requests; in-flight ones may finish; unsent tickets become dead "
              "letters 'interrupted'; send the signal again to stop at once")
        if self._on_stop is not None:
            self._on_stop()
        self._timer = threading.Timer(self._drain_secs, self._drain_over)
        self._timer.daemon = True
        self._timer.start()

    def _drain_over(self) -> None:
        event(_LOG, logging.WARNING, "drain_timeout", drain_secs=self._drain_secs,
              note="cancelling requests still in flight; they become dead letters 'interrupted'")
        self._signal.request_abort()
