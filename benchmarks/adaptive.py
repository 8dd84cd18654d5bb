"""Benchmark of issue 23: ``--max_concurrency auto`` against fixed guesses on a GPU-like server.

    python -m benchmarks.adaptive --smoke --json out/adaptive-smoke.json   # ~2 min: every key (CI)
    python -m benchmarks.adaptive --json out/adaptive.json                 # ~9 min: the figures

Every setting runs ``python -m pipeline`` against its own simulator in ``--server_model gpu``
(the defaults: 48 sequences per batch, 10 ms steps growing 0.02 ms per sequence, a queue of 64,
503 beyond; docs/simulator.md), one after another, in one invocation:

* ``unloaded`` — a few tickets at ``--max_concurrency 2``: the no-load latency (p50, per
  request and per completion token).
* ``auto`` — ``--max_concurrency auto`` from a cold start, for ``auto_secs`` of tickets (enough
  to see a re-probe of the no-load latency in the default mode).
* ``fixed_8``, ``fixed_32``, ``fixed_256`` — the fixed guesses, for ``fixed_secs`` of tickets
  each: too few (throughput left on the table), about right below the knee, too many (latency
  and 503s: the queue overflows).

Tickets per run = the expected rate of the setting (from the model, on paper) x its seconds.
Everything is read from the results (``started_at``, ``finished_at``, ``completion_tokens``,
``latency_ms``), time counted from the first ticket's start. Per setting: throughput at steady
state (from ``steady_from`` s to 10 s before the last answer), in completion tokens per second,
as a fraction of the server's measured peak (``gpu.peak_tokens_per_sec`` of ``/stats``: tokens
per second of the steps it ran with a full batch; the highest of the runs); p50 latency per
completion token at steady state / the unloaded one (per token, because the answers' lengths
vary: a few unloaded tickets are not the same mix as thousands); and the 503s and timeouts of
the whole run. For ``auto`` also: the first second at which the last 10 s reached 0.95 of the
peak (target <= 60 s), and the concurrency figure from its summary.
The load average is recorded before each run and at the end: this box is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import MAX_TOKENS, Bench, Simulator, run_child
from pipeline.outputs import parse_utc
from simulator.gpu import GpuSettings

_REPO = Path(__file__).resolve().parent.parent
#: Mean prompt and completion tokens of the synthetic tickets (for the tickets per run).
_PROMPT, _COMPLETION = 150, 130
_WINDOW = 10  # seconds of the sliding throughput window


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How long each run is, and the simulator's GPU flags, in one mode."""
    auto_secs: float
    fixed_secs: float
    steady_from: float       # auto's steady state starts here (fixed settings: a third of this)
    unloaded_tickets: int
    gpu_flags: tuple[str, ...]


DEFAULT = Sizes(auto_secs=150, fixed_secs=60, steady_from=60, unloaded_tickets=24, gpu_flags=())
# Every key, no figure worth reading: what CI runs (tests/test_benchmarks_smoke.py).
SMOKE = Sizes(auto_secs=14, fixed_secs=6, steady_from=6, unloaded_tickets=4,
              gpu_flags=("--gpu_max_batch", "8", "--gpu_queue", "8", "--gpu_decode_ms", "2"))

SETTINGS = ("auto", "8", "32", "256")

#: Every key the JSON carries (the smoke test checks them).
FIGURES = ("peak_tokens_per_sec", "peak_requests_per_sec", "unloaded_latency_ms_p50",
           "unloaded_ms_per_token_p50", "auto_secs_to_95pct_peak",
           "auto_throughput_fraction", "auto_latency_ratio", "auto_errors",
           "auto_concurrency_final", "auto_concurrency_p50", "fixed_8_throughput_fraction",
           "fixed_8_latency_ratio", "fixed_8_errors", "fixed_32_throughput_fraction",
           "fixed_32_latency_ratio", "fixed_32_errors", "fixed_256_throughput_fraction",
           "fixed_256_latency_ratio", "fixed_256_errors")

_ROWS = (
    ("peak_tokens_per_sec", "{:.0f}", "the server's measured peak (its full-batch steps)"),
    ("peak_requests_per_sec", "{:.2f}", "the same, at its answers' mean length"),
    ("unloaded_latency_ms_p50", "{:.0f}", "--max_concurrency 2"),
    ("unloaded_ms_per_token_p50", "{:.2f}", "--max_concurrency 2"),
    ("auto_secs_to_95pct_peak", "{:.0f}", "<= 60"),
    ("auto_throughput_fraction", "{:.3f}", ">= 0.95 of the peak, at steady state"),
    ("auto_latency_ratio", "{:.2f}", "<= 1.5 x unloaded (p50 per token, steady state)"),
    ("auto_errors", "{:d}", "0 (503s + timeouts)"),
    ("auto_concurrency_final", "{}", "the limit at the end"),
    ("auto_concurrency_p50", "{}", "time-weighted, probes left out"),
    ("fixed_8_throughput_fraction", "{:.3f}", "a wrong guess: too few"),
    ("fixed_8_latency_ratio", "{:.2f}", ""),
    ("fixed_8_errors", "{:d}", ""),
    ("fixed_32_throughput_fraction", "{:.3f}", "below the knee"),
    ("fixed_32_latency_ratio", "{:.2f}", ""),
    ("fixed_32_errors", "{:d}", ""),
    ("fixed_256_throughput_fraction", "{:.3f}", "a wrong guess: too many"),
    ("fixed_256_latency_ratio", "{:.2f}", ""),
    ("fixed_256_errors", "{:d}", "503s (queue full) + timeouts"),
)


def _gpu(sizes: Sizes) -> GpuSettings:
    values = dict(zip(sizes.gpu_flags[::2], sizes.gpu_flags[1::2]))
    return GpuSettings(max_batch=int(values.get("--gpu_max_batch", GpuSettings.max_batch)),
                       queue=int(values.get("--gpu_queue", GpuSettings.queue)),
                       decode_ms=float(values.get("--gpu_decode_ms", GpuSettings.decode_ms)))


def expected_rate(gpu: GpuSettings, concurrency: int) -> float:
    """Answers per second of ``concurrency`` requests in flight, on paper."""
    live = min(concurrency, gpu.max_batch + gpu.queue)
    return live / gpu.latency_secs(live, _PROMPT, _COMPLETION)


def percentile(values: Sequence[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _results(output: Path) -> list[dict]:
    records = []
    for path in output.glob("results-*"):
        with path.open() as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def run_setting(bench: Bench, sizes: Sizes, setting: str, secs: float,
                tickets: int | None = None) -> dict[str, Any]:
    """One pipeline run at ``--max_concurrency setting`` against a fresh GPU-like simulator."""
    gpu = _gpu(sizes)
    if tickets is None:
        rate = expected_rate(gpu, gpu.max_batch if setting == "auto" else int(setting))
        tickets = max(8, int(rate * secs))
    output = bench.workdir / f"out-{setting}-{tickets}"
    with Simulator("--server_model", "gpu", *sizes.gpu_flags) as sim:
        cmd = [sys.executable, "-m", "pipeline", "--input", str(bench.tickets(tickets)),
               "--output", str(output), "--overwrite", "--base_url", sim.base_url,
               "--max_tokens", str(MAX_TOKENS), "--log_level", "WARNING",
               "--max_concurrency", setting]
        run = run_child(cmd, timeout=3600)
        if run.returncode != 0:
            raise RuntimeError(f"pipeline exited {run.returncode}: {run.stderr[-2000:]}")
        stats = sim.stats()
    summary = json.loads((output / "summary.json").read_text())
    if not summary["ledger_balanced"]:
        raise RuntimeError(f"--max_concurrency {setting}: the ledger does not balance")
    results = _results(output)
    bench.log(f"    --max_concurrency {setting}: {tickets} tickets, {run.wall_s:.1f} s wall, "
              f"{summary['succeeded']} answered, {summary['server_errors']} server errors")
    return {"summary": summary, "stats": stats, "results": results, "tickets": tickets}


def _timeline(run: dict) -> tuple[float, list[tuple[float, int, float]]]:
    """(first request's time, [(finished, completion tokens, ms per token)] sorted)."""
    results = run["results"]
    t0 = min(parse_utc(r["started_at"]) for r in results)
    rows = sorted((parse_utc(r["finished_at"]) - t0, r["completion_tokens"],
                   r["latency_ms"] / max(1, r["completion_tokens"]), r["latency_ms"])
                  for r in results)
    return t0, rows


def figures_of(run: dict, steady_from: float, peak_tokens: float,
               unloaded_ms_per_token: float) -> dict:
    """Steady-state throughput fraction, latency ratio and errors of one run."""
    _, rows = _timeline(run)
    end = rows[-1][0] - 10  # the last seconds: the input runs out, the window empties
    steady = [row for row in rows if steady_from <= row[0] <= max(end, steady_from + 1)]
    span = max(1.0, max(end, steady_from + 1) - steady_from)
    summary = run["summary"]
    return {"throughput_fraction": round(sum(r[1] for r in steady) / span / peak_tokens, 3),
            "latency_ratio": round((percentile([r[2] for r in steady], 0.5) or 0.0)
                                   / unloaded_ms_per_token, 3),
            "errors": int(summary["server_errors"] + summary["timeouts"]),
            "latency_ms_p50": percentile([r[3] for r in steady], 0.5),
            "ms_per_token_p50": percentile([r[2] for r in steady], 0.5),
            "tokens_per_sec": round(sum(r[1] for r in steady) / span, 1),
            "dead_lettered": summary["dead_lettered"], "tickets": run["tickets"],
            "server_503s": int(run["stats"]["by_status"].get("503", 0))}


def secs_to_fraction(run: dict, peak_tokens: float, fraction: float = 0.95) -> float | None:
    """The first second (from the first request) at which the completion tokens answered over
    the last 10 s reached ``fraction`` of the peak."""
    _, rows = _timeline(run)
    per_second: dict[int, int] = {}
    for finished, tokens, *_ in rows:
        per_second[int(finished)] = per_second.get(int(finished), 0) + tokens
    for t in range(_WINDOW, max(per_second, default=0) + 1):
        window = sum(per_second.get(s, 0) for s in range(t - _WINDOW, t)) / _WINDOW
        if window >= fraction * peak_tokens:
            return float(t)
    return None


def measure(bench: Bench, sizes: Sizes, load: list) -> dict[str, Any]:
    """All runs; the figures."""
    load.append(round(os.getloadavg()[0], 2))
    unloaded = run_setting(bench, sizes, "2", 0, tickets=sizes.unloaded_tickets)
    unloaded_ms = percentile([r["latency_ms"] for r in unloaded["results"]], 0.5)
    unloaded_per_token = percentile([r["latency_ms"] / max(1, r["completion_tokens"])
                                     for r in unloaded["results"]], 0.5)
    runs = {}
    for setting in SETTINGS:
        load.append(round(os.getloadavg()[0], 2))
        bench.log(f"--max_concurrency {setting} (load average {load[-1]:.1f})")
        secs = sizes.auto_secs if setting == "auto" else sizes.fixed_secs
        runs[setting] = run_setting(bench, sizes, setting, secs)
    gpu = max((r["stats"]["gpu"] for r in runs.values()),
              key=lambda g: g["peak_tokens_per_sec"])
    peak = gpu["peak_tokens_per_sec"]
    out: dict[str, Any] = {"peak_tokens_per_sec": peak,
                           "peak_requests_per_sec": gpu["peak_requests_per_sec"],
                           "peak_on_paper_requests_per_sec": round(
                               expected_rate(_gpu(sizes), _gpu(sizes).max_batch), 2),
                           "unloaded_latency_ms_p50": unloaded_ms,
                           "unloaded_ms_per_token_p50": round(unloaded_per_token, 3)}
    for setting, run in runs.items():
        name = "auto" if setting == "auto" else f"fixed_{setting}"
        steady = sizes.steady_from if setting == "auto" else sizes.steady_from / 3
        figures = figures_of(run, steady, peak, unloaded_per_token)
        for key in ("throughput_fraction", "latency_ratio", "errors"):
            out[f"{name}_{key}"] = figures.pop(key)
        out[f"details_{name}"] = figures
    auto = runs["auto"]
    concurrency = auto["summary"]["concurrency"]
    out["auto_secs_to_95pct_peak"] = secs_to_fraction(auto, peak)
    out["auto_concurrency_final"] = concurrency.get("final")
    out["auto_concurrency_p50"] = concurrency.get("p50")
    out["details_auto"]["concurrency"] = {k: v for k, v in concurrency.items()
                                          if k != "by_time"}
    out["details_auto"]["concurrency_by_time"] = [
        (p["t"], p["limit"], p["state"]) for p in concurrency.get("by_time", [])]
    return out


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    return figures_lib.format_table(_ROWS, figures)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the settings, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="runs of seconds on a small GPU: every key, no figure worth "
                             "reading (CI)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep the jobs' outputs here (default: a temporary "
                        "directory, removed afterwards)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else DEFAULT

    figures = figures_lib.start("smoke" if args.smoke else "default")
    with tempfile.TemporaryDirectory(prefix="ticketflow-adaptive-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures.update(measure(Bench(workdir, log=log), sizes, figures["load_average"]))
    return figures_lib.finish(figures, format_table, FIGURES, args.json)


if __name__ == "__main__":
    sys.exit(main())
