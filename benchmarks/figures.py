"""What the benchmarks' command lines share: the run's header, the table, the JSON, the check.

Each benchmark measures its own scenarios; the bookkeeping around them is this::

    figures = start("smoke" if args.smoke else "default")
    for name in scenarios:
        note_load(figures, name, log)      # the box is shared: the load before each scenario
        figures.update(...)                 # the scenario's figures, ``details_*`` beside them
    return finish(figures, format_table(ROWS, figures_so_far), FIGURES, args.json, log,
                  complete=not args.only)

``finish`` prints the table, writes the JSON (``details_*`` gathered under ``details``) and
fails when a figure of a complete run is missing.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


def start(mode: str) -> dict[str, Any]:
    """The figures' header: mode, commit, CPUs, date, and the (empty) load averages."""
    commit = subprocess.run(["git", "-C", str(_REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"mode": mode, "commit": commit, "cpus": os.cpu_count(), "load_average": [],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "_started": time.perf_counter()}


def note_load(figures: dict[str, Any], name: str | None = None,
              say: Callable[[str], None] = log) -> None:
    """Records the 1-minute load average now (before scenario ``name``, if given)."""
    figures["load_average"].append(round(os.getloadavg()[0], 2))
    if name is not None:
        say(f"{name} (load average {figures['load_average'][-1]:.1f})")


def format_table(rows: Iterable[tuple[str, str, str]], figures: dict[str, Any]) -> str:
    """``(key, format, target)`` rows of the figures present, and the load averages, as text."""
    table = [(key, "—" if figures.get(key) is None else fmt.format(figures[key]), target)
             for key, fmt, target in rows if key in figures]
    if figures.get("load_average"):
        table.append(("load_average (1 min)", " / ".join(map(str, figures["load_average"])),
                      "before each scenario, and at the end"))
    width, value_width = (max(len(r[i]) for r in table) for i in (0, 1))
    lines = [f"{'figure'.ljust(width)}  {'value'.ljust(value_width)}  target"]
    lines += [f"{a.ljust(width)}  {b.ljust(value_width)}  {c}".rstrip() for a, b, c in table]
    return "\n".join(lines)


def finish(figures: dict[str, Any], table: Callable[[dict[str, Any]], str],
           keys: Sequence[str], json_path: str | None, say: Callable[[str], None] = log, *,
           complete: bool = True) -> int:
    """Closes the run: the last load average, the wall time, the table printed, the JSON
    written. Returns 1 when ``complete`` and a figure of ``keys`` is missing (or None), else 0.
    """
    note_load(figures)
    figures["bench_wall_s"] = round(time.perf_counter() - figures.pop("_started"), 1)
    figures["details"] = {k: figures.pop(k) for k in list(figures) if k.startswith("details_")}
    print(table(figures))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    missing = [key for key in keys if figures.get(key) is None]
    if missing and complete:
        say(f"missing figures: {', '.join(missing)}")
        return 1
    return 0
