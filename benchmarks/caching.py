"""Prompt caching benchmark (issue 22): what a cached 2,000-token shared prefix saves.

    python -m benchmarks.caching --smoke --json out/caching-smoke.json   # ~1 min: every key (CI)
    python -m benchmarks.caching --json out/caching.json                 # a few minutes

Every job is ``python -m pipeline`` on synthetic tickets (``tools.ticketgen``, seed 1) with
``--prompt_prefix_file`` a 2,000-token policy manual (the same text in every request, after the
system prompt) and ``--max_tokens 64`` (a short triage answer), against its own simulator
(log-normal latency, median 300 ms, p99 3 s). Costs are the shipped price table's.

1. ``anthropic_*`` — 1,000 tickets to the simulator's Anthropic endpoint
   (``claude-sonnet-4-5``), with its input-tokens-per-minute limit binding
   (``--anthropic_itpm``; the job is told the same number through :data:`INPUT_LIMIT_FLAG`),
   once with ``--prompt_cache on`` and once with ``off``, one after the other in one run.
   ``anthropic_cost_ratio`` = cost on ÷ cost off (target ≤ 0.35: reads cost 0.1x input, the
   one write 1.25x); ``anthropic_throughput_ratio`` = tickets per minute on ÷ off, from the
   simulator's successes per second over each run's steady state (target ≥ 2: cache reads do
   not count against the input-token limit). The cache figures are the job's summary.json.
2. ``openai_*`` — tickets to the simulator's OpenAI endpoint (``gpt-4o-mini``), which reports
   ``prompt_tokens_details.cached_tokens`` for a repeated prefix of 1,024+ tokens in 128-token
   steps: ``openai_cached_tokens`` (summary.json), ``openai_cached_fraction`` of the prompt
   tokens, ``openai_cache_saved_usd`` and ``openai_cost_ratio`` = cost ÷ the same tokens
   without a cache (cost + saved).

The load average is recorded before each scenario and at the end: this box is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import Bench, Simulator, _latency_flags, steady_state

_REPO = Path(__file__).resolve().parent.parent
#: How the job is told the provider's input-token limit: Anthropic's own (cache reads free).
INPUT_LIMIT_FLAG = "--input_tokens_per_minute"
#: The shared document: about 2,000 tokens (the simulator counts 4 characters a token).
PREFIX_TOKENS = 2000
ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_MODEL = "gpt-4o-mini"
ANSWER_TOKENS = 64


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""
    anthropic_tickets: int
    #: The simulator's --anthropic_itpm (and the job's INPUT_LIMIT_FLAG).
    itpm: int
    openai_tickets: int
    concurrency: int = 32


DEFAULT = Sizes(anthropic_tickets=1000, itpm=1_200_000, openai_tickets=300)
#: The smallest run that yields every key (tests/test_benchmarks_smoke.py); figures mean nothing.
SMOKE = Sizes(anthropic_tickets=30, itpm=1_200_000, openai_tickets=20)

#: (key, format, target) of every figure, in the order of the table.
_ROWS = (("anthropic_cost_on_usd", "{:.4f}", "(--prompt_cache on)"),
         ("anthropic_cost_off_usd", "{:.4f}", "(--prompt_cache off)"),
         ("anthropic_cost_ratio", "{:.3f}", "<= 0.35"),
         ("anthropic_cache_read_tokens", "{}", "(summary.json, on)"),
         ("anthropic_cache_write_tokens", "{}", "(summary.json, on)"),
         ("anthropic_cache_saved_usd", "{:.4f}", "(summary.json, on)"),
         ("anthropic_tickets_per_min_on", "{:.0f}", "(input-token limit binding)"),
         ("anthropic_tickets_per_min_off", "{:.0f}", "(input-token limit binding)"),
         ("anthropic_throughput_ratio", "{:.2f}", ">= 2"),
         ("openai_cached_tokens", "{}", "> 0 (summary.json)"),
         ("openai_cached_fraction", "{:.3f}", "(of prompt tokens)"),
         ("openai_cache_saved_usd", "{:.5f}", "> 0"),
         ("openai_cost_ratio", "{:.3f}", "< 1 (cost / cost without the cache)"))
FIGURES = tuple(key for key, _, _ in _ROWS)


def policy_manual(tokens: int = PREFIX_TOKENS) -> str:
    """A deterministic policy manual of about ``tokens`` tokens."""
    rules, i = [], 0
    while sum(len(r) + 1 for r in rules) < tokens * 4:
        i += 1
        rules.append(f"Rule {i}: a refund request for order class {i % 7} within {10 + i % 50} "
                     f"days is approved by tier {1 + i % 3}; quote section {i}.")
    return "\n".join(rules)[: tokens * 4]


def _cache_figures(summary: dict) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("cost_usd", "cache_read_tokens", "cache_write_tokens",
                                        "cache_saved_usd", "prompt_tokens", "completion_tokens",
                                        "wall_secs", "tickets_per_sec", "rate_limited",
                                        "throttled_secs", "provider")}


def _per_minute(stats: dict, summary: dict) -> float:
    steady = steady_state(stats.get("per_second") or [])
    if steady["ok_per_sec"]:
        return steady["ok_per_sec"] * 60.0
    return (summary.get("tickets_per_sec") or 0.0) * 60.0


def scenario_anthropic(bench: Bench, sizes: Sizes, prefix: Path) -> dict[str, Any]:
    """Point 1: caching on vs off with the input-token limit binding."""
    out: dict[str, Any] = {}
    runs = {}
    for mode in ("on", "off"):
        with Simulator("--anthropic_itpm", str(sizes.itpm), *_latency_flags()) as sim:
            _, summary = bench.pipeline(
                sizes.anthropic_tickets, sim.base_url, "--model", ANTHROPIC_MODEL,
                "--prompt_prefix_file", str(prefix), "--prompt_cache", mode,
                "--max_tokens", str(ANSWER_TOKENS), "--max_concurrency", str(sizes.concurrency),
                INPUT_LIMIT_FLAG, str(sizes.itpm))
            stats = sim.stats()
        runs[mode] = {"summary": _cache_figures(summary),
                      "tickets_per_min": _per_minute(stats, summary),
                      "simulator": {k: stats.get(k) for k in (
                          "anthropic_requests", "rate_limited", "cache_read_input_tokens",
                          "cache_creation_input_tokens")}}
    on, off = runs["on"], runs["off"]
    out["anthropic_cost_on_usd"] = on["summary"]["cost_usd"]
    out["anthropic_cost_off_usd"] = off["summary"]["cost_usd"]
    out["anthropic_cost_ratio"] = on["summary"]["cost_usd"] / max(1e-12,
                                                                   off["summary"]["cost_usd"])
    for key in ("cache_read_tokens", "cache_write_tokens", "cache_saved_usd"):
        out[f"anthropic_{key}"] = on["summary"][key]
    out["anthropic_tickets_per_min_on"] = on["tickets_per_min"]
    out["anthropic_tickets_per_min_off"] = off["tickets_per_min"]
    out["anthropic_throughput_ratio"] = on["tickets_per_min"] / max(1e-9, off["tickets_per_min"])
    out["details_anthropic"] = {"tickets": sizes.anthropic_tickets, "itpm": sizes.itpm,
                                "limit_flag": INPUT_LIMIT_FLAG, "model": ANTHROPIC_MODEL,
                                "runs": runs}
    return out


def scenario_openai(bench: Bench, sizes: Sizes, prefix: Path) -> dict[str, Any]:
    """Point 2: OpenAI's automatic cache, reported and priced."""
    with Simulator(*_latency_flags()) as sim:
        _, summary = bench.pipeline(
            sizes.openai_tickets, sim.base_url, "--model", OPENAI_MODEL,
            "--prompt_prefix_file", str(prefix), "--max_tokens", str(ANSWER_TOKENS),
            "--max_concurrency", str(sizes.concurrency))
    cost, saved = summary["cost_usd"], summary["cache_saved_usd"]
    return {"openai_cached_tokens": summary["cache_read_tokens"],
            "openai_cached_fraction": summary["cache_read_tokens"]
            / max(1, summary["prompt_tokens"]),
            "openai_cache_saved_usd": saved,
            "openai_cost_ratio": cost / max(1e-12, cost + saved),
            "details_openai": {"tickets": sizes.openai_tickets, "model": OPENAI_MODEL,
                               "summary": _cache_figures(summary)}}


SCENARIOS = {"anthropic": scenario_anthropic, "openai": scenario_openai}


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    return figures_lib.format_table(_ROWS, figures)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the scenarios, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.caching",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few tickets: every key, no figure worth reading (CI)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep the jobs' inputs here (default: a temporary "
                        "directory, removed afterwards)")
    args = parser.parse_args(argv)
    mode_name = "smoke" if args.smoke else "default"
    sizes = SMOKE if args.smoke else DEFAULT

    # The simulator takes any key; the job needs one in its environment (not a secret).
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-benchmark")
    figures = figures_lib.start(mode_name)
    with tempfile.TemporaryDirectory(prefix="ticketflow-caching-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        prefix = workdir / "policy_manual.txt"
        prefix.write_text(policy_manual(), encoding="utf-8")
        bench = Bench(workdir, log=log)
        for name in args.only or list(SCENARIOS):
            figures_lib.note_load(figures, name)
            figures.update(SCENARIOS[name](bench, sizes, prefix))
    return figures_lib.finish(figures, format_table, FIGURES, args.json, complete=not args.only)


if __name__ == "__main__":
    sys.exit(main())
