"""Pacing benchmark: how close to a provider's per-second slices the client limiter runs.

    python -m benchmarks.pacing --quick                    # ~2 min: small counts
    python -m benchmarks.pacing --json out/pacing.json     # ~14 min: 3,000 tickets per limit

Four scenarios, each with its own simulator (``python -m simulator --port 0 --burst_secs 1``,
the whole minute only in scenario 4; log-normal latency median 300 ms, p99 3 s) and
``python -m pipeline`` as a child process, measured the way
:func:`benchmarks.run.scenario_utilization` measures (its helpers are reused):

1. ``slice_utilization`` / ``slice_rate_limited_fraction`` — simulator ``--rpm R --burst_secs 1``
   (so any rolling second admits R/60 requests), pipeline ``--requests_per_minute R``.
   Steady-state successes/s ÷ (R/60); all 429s ÷ all requests.
2. ``slice_tpm_utilization`` / ``slice_tpm_rate_limited_fraction`` — the same with ``--tpm T``
   and ``--tokens_per_minute T``; successes/s × tokens charged per request ÷ (T/60).
3. ``too_high_rate_limited_fraction`` / ``too_high_dead_letters`` — the pipeline is told
   ``--requests_per_minute 5R`` while a gateway in front of the simulator enforces R (the
   simulator's ``--rpm R --burst_secs 1``) and strips ``retry-after``, ``retry-after-ms`` and
   every ``x-ratelimit-*`` header from every answer, as a gateway's own limit does. Default
   retries (``--max_retries 6``, backoff 0.5 s to 30 s). ``too_high_utilization`` is the
   steady-state successes/s ÷ (R/60).

4. ``minute_utilization`` / ``minute_slice60_utilization`` — a provider that enforces only the
   whole minute (the simulator's default ``--burst_secs 60``, ``--rpm R``): the pipeline with
   the default ``--rate_slice_secs 1`` and with ``--rate_slice_secs 60``, side by side; 429s
   ÷ requests of each (``minute_*rate_limited_fraction``).

The gateway (:class:`BareGateway`) runs in this process: the simulator has no flag for 429s
without headers, and one would have to be documented in README.md as well.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from aiohttp import ClientSession, TCPConnector, web

from benchmarks.run import (MAX_TOKENS, Bench, Simulator, _latency_flags, _remove_tree,
                            run_child, steady_state)

#: Headers a gateway enforcing its own limit does not send (it knows nothing of the provider's).
_STRIPPED = ("retry-after", "retry-after-ms")
_STRIPPED_PREFIX = "x-ratelimit-"
#: Headers aiohttp sets itself on the way back.
_HOP = ("content-length", "transfer-encoding", "connection", "content-encoding", "date", "server")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""
    rpm: int
    rpm_tickets: int
    tpm: int
    tpm_tickets: int
    real_rpm: int           # the gateway's limit in the too-high scenario
    told_factor: float      # the pipeline is told real_rpm * told_factor
    too_high_tickets: int
    minute_tickets: int
    concurrency: int = 64


QUICK = Sizes(rpm=1200, rpm_tickets=500, tpm=450_000, tpm_tickets=500, real_rpm=1200,
              told_factor=5.0, too_high_tickets=500, minute_tickets=500)
DEFAULT = Sizes(rpm=1200, rpm_tickets=3000, tpm=450_000, tpm_tickets=3000, real_rpm=1200,
                told_factor=5.0, too_high_tickets=1500, minute_tickets=3000)


class BareGateway:
    """A reverse proxy in front of ``upstream`` that strips every rate-limit header.

    It runs its own event loop in a daemon thread of this process; ``base_url`` ends in ``/v1``
    like the simulator's.

    Args:
      upstream: The simulator's base URL (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, upstream: str):
        self._upstream = upstream.rsplit("/v1", 1)[0]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bare-gateway",
                                        daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def _start(self) -> int:
        self._session = ClientSession(connector=TCPConnector(limit=0))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "authorization")}
        async with self._session.request(request.method, self._upstream + request.path_qs,
                                         data=body, headers=headers) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() not in _STRIPPED and k.lower() not in _HOP
                    and not k.lower().startswith(_STRIPPED_PREFIX)}
            return web.Response(status=answer.status, body=payload, headers=kept)

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def __enter__(self) -> "BareGateway":
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _pipeline(bench: Bench, tickets: int, base_url: str, *flags: str) -> dict:
    """Runs the pipeline like :meth:`Bench.pipeline`, but dead letters are a result, not an error.

    Raises:
      RuntimeError: when the pipeline fails.
    """
    output = bench.workdir / f"out-pacing-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "pipeline", "--input", str(bench.tickets(tickets)),
           "--output", str(output), "--overwrite", "--base_url", base_url,
           "--max_tokens", str(MAX_TOKENS), "--log_level", "WARNING", *flags]
    run = run_child(cmd, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"pipeline exited {run.returncode}: {run.stderr[-2000:]}")
    summary = json.loads((output / "summary.json").read_text())
    bench.log(f"    pipeline {tickets} tickets {' '.join(flags)}: {run.wall_s:.1f} s wall, "
              f"{summary['succeeded']} ok, {summary['dead_lettered']} dead letters")
    _remove_tree(output)
    return summary


def _details(steady: dict, stats: dict, summary: dict, **extra: Any) -> dict:
    return {**extra, "steady": steady, "requests": stats["requests"],
            "rate_limited": stats["rate_limited"], "peak_concurrency": stats["peak_concurrency"],
            "throttled_secs": summary["throttled_secs"], "wall_s": summary["wall_secs"],
            # Successes and 429s by second, to see dips and bursts.
            "ok_by_second": [b["ok"] for b in stats["per_second"]],
            "rate_limited_by_second": [b["rate_limited"] for b in stats["per_second"]]}


def _measured(bench: Bench, simulator_flags: Sequence[str], tickets: int,
              *flags: str) -> tuple[dict, dict, dict]:
    """One pipeline run against its own simulator: (summary, simulator stats, steady state)."""
    with Simulator(*simulator_flags, *_latency_flags()) as sim:
        summary = _pipeline(bench, tickets, sim.base_url, *flags)
        stats = sim.stats()
    return summary, stats, steady_state(stats["per_second"])


def scenario_slices(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenarios 1 and 2: exact pacing against one-second slices, RPM then TPM."""
    out: dict[str, Any] = {}
    rps = sizes.rpm / 60.0
    bench.log(f"  one-second slices, RPM {sizes.rpm}: {sizes.rpm_tickets} tickets")
    summary, stats, steady = _measured(
        bench, ("--rpm", str(sizes.rpm), "--burst_secs", "1"), sizes.rpm_tickets,
        "--requests_per_minute", str(sizes.rpm), "--max_concurrency", str(sizes.concurrency))
    out["slice_utilization"] = steady["ok_per_sec"] / rps
    out["slice_rate_limited_fraction"] = stats["rate_limited"] / max(1, stats["requests"])
    out["details_slice_rpm"] = _details(steady, stats, summary, rpm=sizes.rpm,
                                        dead_letters=summary["dead_lettered"])

    bench.log(f"  one-second slices, TPM {sizes.tpm}: {sizes.tpm_tickets} tickets")
    summary, stats, steady = _measured(
        bench, ("--tpm", str(sizes.tpm), "--burst_secs", "1"), sizes.tpm_tickets,
        "--tokens_per_minute", str(sizes.tpm), "--max_concurrency", str(sizes.concurrency))
    # The simulator charges prompt tokens + max_tokens at admission, as benchmarks.run counts.
    cost = stats["prompt_tokens"] / max(1, stats["successful_completions"]) + MAX_TOKENS
    out["slice_tpm_utilization"] = steady["ok_per_sec"] * cost / (sizes.tpm / 60.0)
    out["slice_tpm_rate_limited_fraction"] = stats["rate_limited"] / max(1, stats["requests"])
    out["details_slice_tpm"] = _details(steady, stats, summary, tpm=sizes.tpm,
                                        tokens_per_request=cost,
                                        dead_letters=summary["dead_lettered"])
    return out


def scenario_too_high(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenario 3: told told_factor x the real limit, 429s without any header."""
    told = int(sizes.real_rpm * sizes.told_factor)
    bench.log(f"  limit too high: told {told}/min, granted {sizes.real_rpm}/min, bare 429s: "
              f"{sizes.too_high_tickets} tickets")
    with Simulator("--rpm", str(sizes.real_rpm), "--burst_secs", "1",
                   *_latency_flags()) as sim, BareGateway(sim.base_url) as gateway:
        summary = _pipeline(bench, sizes.too_high_tickets, gateway.base_url,
                            "--requests_per_minute", str(told), "--max_concurrency",
                            str(sizes.concurrency), "--max_retries", "6",
                            "--initial_backoff_secs", "0.5", "--max_backoff_secs", "30")
        stats = sim.stats()
    steady = steady_state(stats["per_second"])
    return {"too_high_rate_limited_fraction": stats["rate_limited"] / max(1, stats["requests"]),
            "too_high_dead_letters": summary["dead_lettered"],
            "too_high_utilization": steady["ok_per_sec"] / (sizes.real_rpm / 60.0),
            "details_too_high": _details(steady, stats, summary, real_rpm=sizes.real_rpm,
                                         told_rpm=told,
                                         dead_letter_reasons=summary["dead_letter_reasons"])}


def scenario_minute(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Scenario 4: a provider that enforces only the whole minute, slice 1 s and 60 s."""
    out: dict[str, Any] = {}
    for slice_secs, key in (("1", "minute"), ("60", "minute_slice60")):
        bench.log(f"  whole minute only, RPM {sizes.rpm}, --rate_slice_secs {slice_secs}: "
                  f"{sizes.minute_tickets} tickets")
        summary, stats, steady = _measured(
            bench, ("--rpm", str(sizes.rpm)), sizes.minute_tickets, "--requests_per_minute",
            str(sizes.rpm), "--max_concurrency", str(sizes.concurrency), "--rate_slice_secs",
            slice_secs)
        out[f"{key}_utilization"] = steady["ok_per_sec"] / (sizes.rpm / 60.0)
        out[f"{key}_rate_limited_fraction"] = stats["rate_limited"] / max(1, stats["requests"])
        out[f"details_{key}"] = _details(steady, stats, summary, rpm=sizes.rpm,
                                         rate_slice_secs=float(slice_secs),
                                         dead_letters=summary["dead_lettered"])
    return out


SCENARIOS = {"slices": scenario_slices, "too_high": scenario_too_high,
             "minute": scenario_minute}


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    rows = [("slice_utilization (RPM)", "slice_utilization", "{:.3f}", ">= 0.95"),
            ("slice_rate_limited_fraction", "slice_rate_limited_fraction", "{:.4f}", "<= 0.005"),
            ("slice_tpm_utilization", "slice_tpm_utilization", "{:.3f}", ">= 0.95"),
            ("slice_tpm_rate_limited_fraction", "slice_tpm_rate_limited_fraction", "{:.4f}",
             "<= 0.005"),
            ("too_high_rate_limited_fraction", "too_high_rate_limited_fraction", "{:.4f}",
             "<= 0.10"),
            ("too_high_dead_letters", "too_high_dead_letters", "{}", "0"),
            ("too_high_utilization", "too_high_utilization", "{:.3f}", ""),
            ("minute_utilization (slice 1 s)", "minute_utilization", "{:.3f}", ""),
            ("minute_slice60_utilization", "minute_slice60_utilization", "{:.3f}", ""),
            ("minute_rate_limited_fraction", "minute_rate_limited_fraction", "{:.4f}", ""),
            ("minute_slice60_rate_limited_fraction", "minute_slice60_rate_limited_fraction",
             "{:.4f}", "")]
    lines = []
    for label, key, fmt, target in rows:
        value = figures.get(key)
        lines.append(f"{label:<38}{'—' if value is None else fmt.format(value):>10}  {target}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: runs the scenarios, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacing",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (~2 min)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    figures: dict[str, Any] = {"mode": "quick" if args.quick else "default"}
    with tempfile.TemporaryDirectory(prefix="ticketflow-pacing-") as tmp:
        bench = Bench(Path(tmp), log=log)
        for name in args.only or list(SCENARIOS):
            found = SCENARIOS[name](bench, sizes)
            figures.update(found)
            log("    -> " + ", ".join(f"{k}={v:.4g}" for k, v in found.items()
                                      if isinstance(v, (int, float))))
    figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
    figures["details"] = {k: figures.pop(k) for k in list(figures) if k.startswith("details_")}
    print(format_table(figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
