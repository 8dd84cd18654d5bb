"""Provider limits benchmark of issue 22: each limit as the provider counts it, one at a time.

    python -m benchmarks.providers --smoke         # a point per provider, figures mean nothing (CI)
    python -m benchmarks.providers --json out.json  # 2,000 tickets per point, ~6 min

Each point runs ``python -m pipeline`` on synthetic tickets (``tools.ticketgen``, seed 1) against
its own simulator (log-normal latency, median 300 ms, p99 3 s; ``--burst_secs 1``), with the same
limits given to the pipeline and to the simulator, and ONE of them low enough to bind (the others
three times what the binding one lets through):

* ``openai_requests``, ``openai_tokens`` — the OpenAI chat API (``--rpm``, ``--tpm``: prompt +
  ``max_tokens``, in one-second slices), the pipeline with ``--requests_per_minute`` and
  ``--tokens_per_minute``;
* ``anthropic_requests`` — Anthropic's Messages API (``--anthropic_rpm``), the pipeline with
  ``--requests_per_minute``;
* ``anthropic_input`` — ``--anthropic_itpm`` / ``--input_tokens_per_minute`` (cache reads are
  free; the default system prompt is below the model's cache minimum, so every input token
  counts);
* ``anthropic_output`` — ``--anthropic_otpm`` / ``--output_tokens_per_minute`` (``max_tokens``
  reserved on admission, settled to the tokens produced);
* ``gemini_requests`` — Gemini's ``generateContent`` (``--gemini_rpm``), the pipeline with
  ``--provider gemini --model gemini-2.5-flash`` and ``--requests_per_minute``;
* ``gemini_tokens`` — ``--gemini_tpm`` (every input token, cached or not), the pipeline told
  it as ``--input_tokens_per_minute``, as docs/throughput.md advises;
* ``gemini_tokens_as_tpm`` — the same limit told as ``--tokens_per_minute``, as the Gemini
  section of docs/providers.md says: that flag charges the prompt and ``max_tokens``, an
  OpenAI-style count, so the job stays far below Gemini's input-only limit (a figure, not a
  target).

Anthropic's and Gemini's limits are buckets of a minute's capacity refilled continuously
(``simulator.buckets.TokenBucket``): the simulator's ``--burst_secs`` bounds only its OpenAI
route, so it changes nothing here; the pipeline's limiter is told ``--rate_slice_secs 60``.

Figures per point: ``utilization`` — the binding limit used in the steady state
(:func:`benchmarks.run.steady_state`: successes/s x the mean charge of a request ÷ the limit/s);
``rate_limited_fraction`` — 429s ÷ requests over the whole run; ``lost`` — tickets neither
answered nor dead-lettered (the summary's ledger); ``ledger_balanced``. Targets: 0 lost, ledger
balanced, utilization >= 0.95, <= 0.5 % 429s.

A point is a :class:`Point`: which simulator flag and which pipeline flag carry each limit,
and the binding limit's charge of one request; the table and the JSON take it as it is.
Gemini's requests per day is not a point: a day's cap is not a rate to use up
(``tests/test_provider_limits.py`` covers it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import figures as figures_lib
from benchmarks.figures import log
from benchmarks.run import MAX_TOKENS, Bench, Simulator, _latency_flags, steady_state

MODEL = "claude-haiku-4-5"
GEMINI_MODEL = "gemini-2.5-flash"
#: The simulator accepts any key; the pipeline needs one in the provider's variable.
_KEY_ENV = {"ANTHROPIC_API_KEY": "sk-ant-simulator", "GEMINI_API_KEY": "gemini-simulator"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each point is in one mode."""
    tickets: int
    requests_per_sec: float  # what the binding limit lets through, in requests per second
    concurrency: int = 64


SMOKE = Sizes(tickets=60, requests_per_sec=30)
DEFAULT = Sizes(tickets=2000, requests_per_sec=25)

# A synthetic ticket's request, measured (tools.ticketgen, seed 1, the default system prompt):
# used only to size the limits so that the binding one binds.
INPUT_PER_REQUEST = 140
OUTPUT_PER_REQUEST = 150


def _charge_requests(stats: dict) -> float:
    return 1.0


def _charge_input(stats: dict) -> float:
    # What Anthropic's input limit counts: every input token but the cache reads.
    charged = stats["prompt_tokens"] - stats["cache_read_input_tokens"]
    return charged / max(1, stats["successful_completions"])


def _charge_prompt(stats: dict) -> float:
    # What Gemini's token limit counts: every input token, cached or not.
    return stats["prompt_tokens"] / max(1, stats["successful_completions"])


def _charge_prompt_and_max(stats: dict) -> float:
    # What OpenAI's token limit counts at admission: the prompt and max_tokens.
    return stats["prompt_tokens"] / max(1, stats["successful_completions"]) + MAX_TOKENS


def _charge_output(stats: dict) -> float:
    return stats["completion_tokens"] / max(1, stats["successful_completions"])


@dataclasses.dataclass(frozen=True)
class Point:
    """One provider limit made to bind.

    Attributes:
      provider: Whose wire format.
      binding: Which limit binds: ``requests``, ``tokens``, ``input_tokens`` or
        ``output_tokens``.
      per_request: The binding limit's charge of one request, by the simulator's stats.
      job_flags: What the pipeline is told of the provider besides the limits.
      sim_limits: (simulator flag, limit) for each limit the provider enforces.
      job_limits: (pipeline flag, limit) for each limit the pipeline is told.
    """
    provider: str
    binding: str
    per_request: Callable[[dict], float]
    job_flags: tuple = ()
    sim_limits: tuple = (("--anthropic_rpm", "requests"), ("--anthropic_itpm", "input_tokens"),
                         ("--anthropic_otpm", "output_tokens"))
    job_limits: tuple = (("--requests_per_minute", "requests"),
                         ("--input_tokens_per_minute", "input_tokens"),
                         ("--output_tokens_per_minute", "output_tokens"))


# Anthropic's limits are buckets refilled continuously, not one-second slices: the limiter's
# window is told a minute (its bucket still spaces the requests evenly), as docs/throughput.md
# advises for Anthropic.
_ANTHROPIC = ("--model", MODEL, "--rate_slice_secs", "60")
# Gemini's limits are the same kind of bucket on the simulator; it enforces no output limit.
_GEMINI = ("--provider", "gemini", "--model", GEMINI_MODEL, "--rate_slice_secs", "60")
_GEMINI_SIM = (("--gemini_rpm", "requests"), ("--gemini_tpm", "input_tokens"))
_GEMINI_JOB = (("--requests_per_minute", "requests"),
               ("--input_tokens_per_minute", "input_tokens"))
_GEMINI_JOB_TPM = (("--requests_per_minute", "requests"), ("--tokens_per_minute", "input_tokens"))

# OpenAI's limits on the simulator: a minute's requests and tokens (prompt + max_tokens) in
# one-second slices (--burst_secs 1); the limiter keeps its default one-second window.
_OPENAI = ("--model", "gpt-4o-mini")
_OPENAI_SIM = (("--rpm", "requests"), ("--tpm", "tokens"))
_OPENAI_JOB = (("--requests_per_minute", "requests"), ("--tokens_per_minute", "tokens"))

POINTS = {
    "openai_requests": Point("openai", "requests", _charge_requests, _OPENAI,
                             _OPENAI_SIM, _OPENAI_JOB),
    "openai_tokens": Point("openai", "tokens", _charge_prompt_and_max, _OPENAI,
                           _OPENAI_SIM, _OPENAI_JOB),
    "anthropic_requests": Point("anthropic", "requests", _charge_requests, _ANTHROPIC),
    "anthropic_input": Point("anthropic", "input_tokens", _charge_input, _ANTHROPIC),
    "anthropic_output": Point("anthropic", "output_tokens", _charge_output, _ANTHROPIC),
    "gemini_requests": Point("gemini", "requests", _charge_requests, _GEMINI,
                             _GEMINI_SIM, _GEMINI_JOB),
    "gemini_tokens": Point("gemini", "input_tokens", _charge_prompt, _GEMINI,
                           _GEMINI_SIM, _GEMINI_JOB),
    "gemini_tokens_as_tpm": Point("gemini", "input_tokens", _charge_prompt, _GEMINI,
                                  _GEMINI_SIM, _GEMINI_JOB_TPM),
}

#: What ``--smoke`` runs: one point per provider (every point's figures come from the same code;
#: a pipeline's start-up, not its tickets, is most of a point's time).
SMOKE_POINTS = ("openai_tokens", "anthropic_output", "gemini_tokens")


def figures_of(names) -> tuple:
    """Every key the JSON carries for the points ``names`` (the smoke test checks them)."""
    return tuple(f"{name}_{figure}" for name in names
                 for figure in ("utilization", "rate_limited_fraction", "lost"))


FIGURES = figures_of(POINTS)


def _limits(sizes: Sizes, binding: str) -> dict[str, int]:
    """Per-minute limits with ``binding`` at the point's rate and the others 3x above it."""
    per_minute = sizes.requests_per_sec * 60
    natural = {"requests": per_minute, "input_tokens": per_minute * INPUT_PER_REQUEST,
               "output_tokens": per_minute * OUTPUT_PER_REQUEST,
               "tokens": per_minute * (INPUT_PER_REQUEST + MAX_TOKENS)}
    return {kind: round(value * (1 if kind == binding else 3)) for kind, value in natural.items()}


def run_point(bench: Bench, sizes: Sizes, name: str) -> dict[str, Any]:
    """One pipeline run with ``POINTS[name]``'s limit binding; its figures."""
    point = POINTS[name]
    limits = _limits(sizes, point.binding)
    sim_flags = [arg for flag, kind in point.sim_limits for arg in (flag, str(limits[kind]))]
    job_flags = [*point.job_flags, "--max_concurrency", str(sizes.concurrency),
                 *(arg for flag, kind in point.job_limits for arg in (flag, str(limits[kind])))]
    limits = {kind: limits[kind] for _, kind in point.sim_limits}
    bench.log(f"  {name}: {sizes.tickets} tickets, limits {limits}")
    with Simulator(*sim_flags, "--burst_secs", "1", *_latency_flags()) as sim:
        run, summary = bench.pipeline(sizes.tickets, sim.base_url, *job_flags)
        stats = sim.stats()
    steady = steady_state(stats["per_second"])
    charge = point.per_request(stats)
    limit_per_sec = limits[point.binding] / 60.0
    requests = max(1, stats["requests"])
    lost = summary["read"] - summary["succeeded"] - summary["dead_lettered"]
    return {f"{name}_utilization": steady["ok_per_sec"] * charge / limit_per_sec,
            f"{name}_rate_limited_fraction": stats["rate_limited"] / requests,
            f"{name}_lost": lost,
            f"{name}_ledger_balanced": bool(summary.get("ledger_balanced")),
            f"details_{name}": {"limits": limits, "binding": point.binding,
                                "charge_per_request": round(charge, 1), "steady": steady,
                                "requests": stats["requests"],
                                "rate_limited": stats["rate_limited"],
                                "cache_read_input_tokens": stats["cache_read_input_tokens"],
                                "throttled_secs": summary.get("throttled_secs"),
                                "wall_s": round(run.wall_s, 1)}}


def format_table(figures: dict[str, Any]) -> str:
    """The points as a plain-text table: one row per point, its figures and the targets."""
    header = ("point", "binding", "utilization", "429s", "lost", "ledger")
    rows = [header]
    for name, point in POINTS.items():
        if f"{name}_utilization" not in figures:
            continue
        rows.append((name, point.binding, f"{figures[f'{name}_utilization']:.3f}",
                     f"{figures[f'{name}_rate_limited_fraction']:.2%}",
                     str(figures[f"{name}_lost"]),
                     "balanced" if figures.get(f"{name}_ledger_balanced") else "NOT balanced"))
    rows.append(("target", "", ">= 0.95", "<= 0.50%", "0", "balanced"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: runs the points, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.providers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="one point per provider, the smallest counts (what CI runs)")
    parser.add_argument("--only", choices=sorted(POINTS), action="append",
                        help="run only this point (repeatable)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else DEFAULT
    os.environ.update(_KEY_ENV)

    figures = figures_lib.start("smoke" if args.smoke else "default")
    with tempfile.TemporaryDirectory(prefix="ticketflow-providers-") as tmp:
        bench = Bench(Path(tmp), log=log)
        names = args.only or (SMOKE_POINTS if args.smoke else list(POINTS))
        for name in names:
            figures_lib.note_load(figures, name)
            figures.update(run_point(bench, sizes, name))
    return figures_lib.finish(figures, format_table, figures_of(names), args.json)


if __name__ == "__main__":
    sys.exit(main())
