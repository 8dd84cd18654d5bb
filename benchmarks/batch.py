"""Batch API benchmark: what ``--api batch`` saves, and what its path costs in time.

    python -m benchmarks.batch --quick               # the sample only, one run each (~1 min)
    python -m benchmarks.batch --json out/batch.json # + 3,000 synthetic, 3 runs each (~5 min)
    python -m benchmarks.batch --quick --provider anthropic   # one provider only

Each provider's Batch API (``--provider``, repeatable; all three by default) is measured side by
side with its online API against one simulator process (``python -m simulator --port 0
--batch_secs 0``: a batch is done by the next poll, no latency), so the time measured is the
pipeline's own:

* ``openai`` — the Batch API (``/v1/files`` + ``/v1/batches``), gpt-4o-mini;
* ``anthropic`` — Message Batches (``/v1/messages/batches``), claude-haiku-4-5;
* ``gemini`` — batch mode (Files API + ``batchGenerateContent``), gemini-2.5-flash.

Two figures per provider (the JSON's ``providers.<name>``):

1. ``cost_per_1000`` — USD per 1,000 tickets online and through the Batch API on the sample
   (``examples/tickets.jsonl``, the model's list prices in ``transforms/pricing.json``), and
   their ratio (0.5 by construction of the prices: the figure checks that every answer is paid
   at the batch price, cache reads and writes included, and that the same tickets were
   answered);
2. ``overhead`` — wall seconds of ``--api batch`` and of online for the same tickets, their
   difference and ratio, the median of the runs: the pack pipeline, the uploads, the polls and
   the downloads, against online requests that take no time. With a real provider the batch
   path adds minutes to hours of waiting; this is what it adds when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
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


#: provider -> the job's flags naming it (and its model). The simulator accepts any key; the
#: pipeline needs one in the provider's variable (_KEY_ENV).
PROVIDERS: Dict[str, tuple] = {
    "openai": ("--provider", "openai", "--model", "gpt-4o-mini"),
    "anthropic": ("--provider", "anthropic", "--model", "claude-haiku-4-5"),
    "gemini": ("--provider", "gemini", "--model", "gemini-2.5-flash"),
}
_KEY_ENV = {"OPENAI_API_KEY": "sk-simulator", "ANTHROPIC_API_KEY": "sk-ant-simulator",
            "GEMINI_API_KEY": "gemini-simulator"}


def measure(workdir: Path, inputs: Dict[str, Path], repeats: int, log=print,
            providers: Sequence[str] = tuple(PROVIDERS)) -> Dict[str, Any]:
    """Runs online and batch of each provider on each input ``repeats`` times, alternating.

    Returns:
      ``{"providers": {provider: {"cost_per_1000": ..., "overhead": [...]}}}``.
    """
    os.environ.update({k: v for k, v in _KEY_ENV.items() if k not in os.environ})
    figures: Dict[str, Any] = {"providers": {}}
    with Simulator("--batch_secs", "0") as sim:
        for provider in providers:
            log(f"  {provider}")
            figures["providers"][provider] = _measure_provider(
                workdir, sim.base_url, inputs, repeats, PROVIDERS[provider], log)
    return figures


def _measure_provider(workdir: Path, base_url: str, inputs: Dict[str, Path], repeats: int,
                      provider_flags: tuple, log) -> Dict[str, Any]:
    figures: Dict[str, Any] = {"overhead": []}
    batch_flags = ("--api", "batch", "--batch_poll_secs", "0.2")
    for name, path in inputs.items():
        walls: Dict[str, List[float]] = {"online": [], "batch": []}
        last: Dict[str, Dict] = {}
        for i in range(repeats):
            for mode, flags in (("online", ()), ("batch", batch_flags)):
                tag = f"{provider_flags[1]}-{name}-{mode}-{i}"
                run = _run(workdir, path, base_url, tag, *provider_flags, *flags)
                walls[mode].append(run["wall_s"])
                last[mode] = run["summary"]
                log(f"    {name} {mode}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s "
                    f"CPU, ${run['summary']['cost_usd']:.6f}")
        if last["batch"]["succeeded"] != last["online"]["succeeded"]:
            raise RuntimeError(f"{name}: batch answered {last['batch']['succeeded']} "
                               f"tickets, online {last['online']['succeeded']}")
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
                    last["batch"]["online_cost_usd"] / tickets * 1000, 6),
                "batches_created": last["batch"]["batch"]["batches_created"],
                "answered_by_batch": last["batch"]["batch"]["answered_by_batch"],
                "answered_online": last["batch"]["batch"]["answered_online"]}
    return figures


def format_table(figures: Dict[str, Any]) -> str:
    """The figures as plain text: per provider, the cost per 1,000 tickets and the times."""
    lines = ["batch benchmark"]
    for provider, its in figures["providers"].items():
        cost = its["cost_per_1000"]
        lines.append(f"  {provider:<9} cost per 1,000 tickets: online ${cost['online_usd']:.4f}, "
                     f"batch ${cost['batch_usd']:.4f} (ratio {cost['ratio']:.4f}; "
                     f"{cost['answered_by_batch']} answered by batch, "
                     f"{cost['answered_online']} online)")
        for row in its["overhead"]:
            lines.append(f"  {provider:<9} time, {row['input']:<8} {row['tickets']:>6} tickets: "
                         f"online {row['online_wall_s']:.1f} s, batch {row['batch_wall_s']:.1f} "
                         f"s ({row['overhead_s']:+.1f} s, x{row['ratio']:.2f}; median of "
                         f"{row['runs']})")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch")
    parser.add_argument("--quick", action="store_true", help="The sample only, one run each.")
    parser.add_argument("--tickets", type=int, default=3000,
                        help="Synthetic tickets of the larger input (not with --quick).")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), action="append",
                        help="Measure this provider's Batch API (repeatable; default: all).")
    parser.add_argument("--json", help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    providers = args.provider or list(PROVIDERS)
    with tempfile.TemporaryDirectory(prefix="tf-batch-bench-") as tmp:
        workdir = Path(tmp)
        inputs = {"sample": SAMPLE}
        if not args.quick:
            inputs["synthetic"] = Bench(workdir).tickets(args.tickets)
        figures = measure(workdir, inputs, repeats=1 if args.quick else 3,
                          log=lambda m: print(m, file=sys.stderr), providers=providers)
    print(format_table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
