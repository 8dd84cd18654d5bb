"""Batch API benchmark: what ``--api batch`` saves, and what its path costs in time.

    python -m benchmarks.batch --quick               # the sample only, one run each (~1 min)
    python -m benchmarks.batch --json out/batch.json # + 3,000 synthetic tickets, 3 runs each

Two figures, both measured side by side against one simulator process (``python -m simulator
--port 0 --batch_secs 0``: a batch is done by the next poll, no latency), so the time measured is
the pipeline's own:

1. ``cost_per_1000`` — USD per 1,000 tickets online and through the Batch API on the sample
   (``examples/tickets.jsonl``, gpt-4o-mini list prices), and their ratio (0.5 by construction
   of the prices: the figure checks that every answer is paid at the batch price);
2. ``overhead`` — wall seconds of ``--api batch`` and of online for the same tickets, their
   difference and ratio, the median of the runs: the pack pipeline, the uploads, the polls and
   the downloads, against online requests that take no time. With a real provider the batch
   path adds minutes to hours of waiting; this is what it adds when it does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.run import Bench, Simulator, _remove_tree, run_child

_REPO = Path(__file__).resolve().parent.parent
SAMPLE = _REPO / "examples" / "tickets.jsonl"


def _run(workdir: Path, tickets: Path, base_url: str, tag: str, *flags: str) -> Dict[str, Any]:
    output = workdir / f"out-{tag}"
    cmd = [sys.executable, "-m", "pipeline", "--input", str(tickets), "--output", str(output),
           "--overwrite", "--base_url", base_url, "--log_level", "WARNING", "--quiet", *flags]
    run = run_child(cmd, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"pipeline exited {run.returncode}: {run.stderr[-2000:]}")
    summary = json.loads((output / "summary.json").read_text())
    _remove_tree(output)
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "summary": summary}


def measure(workdir: Path, inputs: Dict[str, Path], repeats: int, log=print) -> Dict[str, Any]:
    """Runs online and batch on each input ``repeats`` times, alternating; returns the figures."""
    figures: Dict[str, Any] = {"overhead": []}
    batch_flags = ("--api", "batch", "--batch_poll_secs", "0.2")
    with Simulator("--batch_secs", "0") as sim:
        for name, path in inputs.items():
            walls: Dict[str, List[float]] = {"online": [], "batch": []}
            last: Dict[str, Dict] = {}
            for i in range(repeats):
                for mode, flags in (("online", ()), ("batch", batch_flags)):
                    run = _run(workdir, path, sim.base_url, f"{name}-{mode}-{i}", *flags)
                    walls[mode].append(run["wall_s"])
                    last[mode] = run["summary"]
                    log(f"    {name} {mode}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s "
                        f"CPU, ${run['summary']['cost_usd']:.6f}")
            tickets = last["online"]["succeeded"]
            online, batch = statistics.median(walls["online"]), statistics.median(walls["batch"])
            figures["overhead"].append({
                "input": name, "tickets": tickets, "online_wall_s": round(online, 2),
                "batch_wall_s": round(batch, 2), "overhead_s": round(batch - online, 2),
                "ratio": round(batch / online, 2), "runs": repeats})
            if name == "sample":
                per_1000 = {mode: last[mode]["cost_usd"] / tickets * 1000 for mode in last}
                figures["cost_per_1000"] = {
                    "online_usd": round(per_1000["online"], 6),
                    "batch_usd": round(per_1000["batch"], 6),
                    "ratio": round(per_1000["batch"] / per_1000["online"], 4),
                    "batch_online_equivalent_usd": round(
                        last["batch"]["online_cost_usd"] / tickets * 1000, 6)}
    return figures


def format_table(figures: Dict[str, Any]) -> str:
    cost = figures["cost_per_1000"]
    lines = ["batch benchmark",
             f"  cost per 1,000 tickets   online ${cost['online_usd']:.4f}, batch "
             f"${cost['batch_usd']:.4f} (ratio {cost['ratio']:.2f})"]
    for row in figures["overhead"]:
        lines.append(f"  time, {row['input']:<8} {row['tickets']:>6} tickets: online "
                     f"{row['online_wall_s']:.1f} s, batch {row['batch_wall_s']:.1f} s "
                     f"({row['overhead_s']:+.1f} s, x{row['ratio']:.2f}; median of "
                     f"{row['runs']})")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch")
    parser.add_argument("--quick", action="store_true", help="The sample only, one run each.")
    parser.add_argument("--tickets", type=int, default=3000,
                        help="Synthetic tickets of the larger input (not with --quick).")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tf-batch-bench-") as tmp:
        workdir = Path(tmp)
        inputs = {"sample": SAMPLE}
        if not args.quick:
            inputs["synthetic"] = Bench(workdir).tickets(args.tickets)
        figures = measure(workdir, inputs, repeats=1 if args.quick else 3,
                          log=lambda m: print(m, file=sys.stderr))
    print(format_table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
