"""The benchmark suite of issue 4: every figure of ``benchmarks/RESULTS.md`` in one invocation.

    python -m benchmarks.run --quick --json out/bench.json   # ~3 min: small counts, every key
    python -m benchmarks.run --json out/bench.json           # ~15 min: 10k and 100k scaling
    python -m benchmarks.run --full --json out/bench.json    # adds 1M tickets (~1 h more here)

Each scenario starts its own simulator process (``python -m simulator --port 0 ...``) and runs
``python -m pipeline`` (and, for the overhead, ``python -m benchmarks.bare_client``) as child
processes against it, so that CPU time and peak memory can be read per child:

1. ``utilization`` — simulator and pipeline both limited to ``--rpm R`` (then ``--tpm T``),
   log-normal latency (median 300 ms, p99 3 s). Steady-state successes/s from the simulator's
   ``per_second`` buckets ÷ (R/60); 429s ÷ requests.
2. ``concurrency_efficiency`` — no limits, same latency: steady-state tickets/s ÷
   (max_concurrency / mean latency), the mean of the log-normal computed analytically;
   ``barrier_efficiency`` is the same with ``--dispatch barrier``.
3. ``cpu_per_ticket_s`` — zero latency, no limits: (CPU of N tickets − CPU of 1 ticket) / (N − 1)
   for the pipeline and for the bare client; the 1-ticket CPU is the start-up, reported apart.
   The same for the ``openai`` SDK alone on its aiohttp transport (``benchmarks.sdk_baseline``,
   raw JSON answers: ``sdk_cpu_per_ticket_s``, ``cpu_ratio_vs_sdk``) and for a bare aiohttp loop
   (``benchmarks.aiohttp_baseline``: ``bare_aiohttp_cpu_per_ticket_s``). Also from the N-ticket
   pipeline run: ``tickets_per_sec`` (steady-state answers/s at the simulator, one process) and
   ``first_request_secs`` (process start → the simulator's first chat request, polled).
4. ``scaling`` — zero latency: wall seconds per ticket and peak RSS for growing inputs.
5. ``simulator_rps`` — ``benchmarks.simulator_capacity.measure_capacity``.

The figures are printed as a table and, with ``--json FILE``, written as JSON (method notes and
raw numbers under ``details``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from benchmarks.first_request import FirstRequestWatch
from benchmarks.simulator_capacity import measure_capacity

_REPO = Path(__file__).resolve().parent.parent
_Z99 = 2.3263478740408408  # the standard normal's 99th percentile, as the simulator uses it
LATENCY_MEDIAN_MS = 300.0
LATENCY_P99_MS = 3000.0
MAX_TOKENS = 256


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each scenario is in one mode."""
    rpm: int
    rpm_secs: float          # planned duration of each utilisation run
    tpm: int
    util_concurrency: int
    concurrency: int
    concurrency_tickets: int
    barrier_tickets: int     # fewer: the barrier is ~5x slower, and its rate is as clear
    overhead_tickets: int
    scaling: tuple[int, ...]
    capacity_secs: float


QUICK = Sizes(rpm=1200, rpm_secs=15, tpm=450_000, util_concurrency=64, concurrency=32,
              concurrency_tickets=600, barrier_tickets=300, overhead_tickets=1500,
              scaling=(1000, 4000), capacity_secs=3)
DEFAULT = Sizes(rpm=1200, rpm_secs=75, tpm=450_000, util_concurrency=64, concurrency=32,
                concurrency_tickets=4000, barrier_tickets=1000,
                overhead_tickets=10_000, scaling=(10_000, 100_000),
                capacity_secs=10)
FULL = dataclasses.replace(DEFAULT, scaling=(10_000, 100_000, 1_000_000))
# The smallest run that still yields every figure: what CI runs (tests/test_benchmarks_smoke.py)
# to prove the harness works. Its figures mean nothing.
SMOKE = Sizes(rpm=1200, rpm_secs=3, tpm=450_000, util_concurrency=64, concurrency=32,
              concurrency_tickets=80, barrier_tickets=32, overhead_tickets=200,
              scaling=(100, 200), capacity_secs=1)

#: Every key the JSON carries (the smoke test checks them).
FIGURES = ("utilization", "rate_limited_fraction", "tpm_utilization", "concurrency_efficiency",
           "barrier_efficiency", "cpu_per_ticket_s", "baseline_cpu_per_ticket_s",
           "cpu_per_ticket_ratio", "sdk_cpu_per_ticket_s", "bare_aiohttp_cpu_per_ticket_s",
           "cpu_ratio_vs_sdk", "tickets_per_sec", "first_request_secs", "scaling",
           "simulator_rps")


def lognormal_mean_s(median_ms: float, p99_ms: float) -> float:
    """The mean of the simulator's log-normal latency, in seconds: median · exp(σ²/2)."""
    sigma = math.log(p99_ms / median_ms) / _Z99
    return median_ms / 1000.0 * math.exp(sigma * sigma / 2.0)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    return env


def terminate(process: subprocess.Popen) -> None:
    """Stops a child: SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Simulator:
    """``python -m simulator --port 0 FLAGS`` in its own process, for one scenario."""

    def __init__(self, *flags: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "simulator", "--port", "0", *flags], cwd=_REPO, env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.base_url = line[len("listening on "):]

    def stats(self) -> dict:
        root = self.base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        """Zeroes the simulator's stats (``POST /reset``), e.g. between two measured runs."""
        root = self.base_url.rsplit("/v1", 1)[0]
        request = urllib.request.Request(f"{root}/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        terminate(self.process)


@dataclasses.dataclass
class ChildRun:
    """One measured child process."""
    returncode: int
    wall_s: float
    cpu_s: float            # user + system of the child and the descendants it waited for
    peak_rss_mb: float      # the largest sum of RSS over the child's process tree, polled
    stdout: str
    stderr: str
    rss_timeline: list[tuple[float, float]]  # (seconds since start, tree RSS in MB), polled


def _tree_rss_kb(pid: int) -> int:
    """RSS of ``pid`` and its descendants, in kB (Linux /proc; 0 when it has gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_child(cmd: Sequence[str], timeout: float) -> ChildRun:
    """Runs ``cmd`` and measures its wall time, CPU (``wait4``'s rusage) and peak tree RSS.

    Raises:
        RuntimeError: when it runs past ``timeout``.
    """
    out = tempfile.TemporaryFile("w+")
    err = tempfile.TemporaryFile("w+")
    started = time.perf_counter()
    process = subprocess.Popen(list(cmd), cwd=_REPO, env=_env(), stdout=out, stderr=err,
                               text=True)
    peak = [0]
    timeline: list[tuple[float, float]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.2):
            rss = _tree_rss_kb(process.pid)
            peak[0] = max(peak[0], rss)
            timeline.append((round(time.perf_counter() - started, 1), round(rss / 1024.0, 1)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            done.set()
            raise RuntimeError(f"timed out after {timeout:.0f}s: {' '.join(cmd)[:200]}")
        time.sleep(0.05)
    wall = time.perf_counter() - started
    done.set()
    poller.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # os.wait4 reaped it, not Popen
    out.seek(0)
    err.seek(0)
    # ru_maxrss is the largest single process (kB on Linux); the poll sums the tree.
    peak_kb = max(peak[0], usage.ru_maxrss)
    return ChildRun(returncode=process.returncode, wall_s=wall,
                    cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=peak_kb / 1024.0,
                    stdout=out.read(), stderr=err.read(), rss_timeline=timeline)


class Bench:
    """Ticket files, output directories and child runs of one benchmark invocation."""

    def __init__(self, workdir: Path, log=print):
        self.workdir = workdir
        self.log = log
        self._runs = 0

    def tickets(self, count: int) -> Path:
        """A JSONL file of ``count`` synthetic tickets (seed 1), made once per invocation."""
        path = self.workdir / f"tickets-{count}.jsonl"
        if not path.exists():
            subprocess.run([sys.executable, "-m", "tools.ticketgen", "--count", str(count),
                            "--seed", "1", "--out", str(path)], cwd=_REPO, env=_env(),
                           check=True, capture_output=True)
        return path

    def pipeline(self, tickets: int, base_url: str, *flags: str,
                 timeout: float = 7200) -> tuple[ChildRun, dict]:
        """Runs ``python -m pipeline`` on ``tickets`` tickets; returns the run and summary.json.

        Raises:
            RuntimeError: when the pipeline fails or its ledger does not balance.
        """
        self._runs += 1
        output = self.workdir / f"out-{self._runs}"
        cmd = [sys.executable, "-m", "pipeline", "--input", str(self.tickets(tickets)),
               "--output", str(output), "--overwrite", "--base_url", base_url,
               "--max_tokens", str(MAX_TOKENS), "--log_level", "WARNING", *flags]
        run = run_child(cmd, timeout)
        if run.returncode != 0:
            raise RuntimeError(f"pipeline exited {run.returncode}: {run.stderr[-2000:]}")
        summary = json.loads((output / "summary.json").read_text())
        if summary["succeeded"] != tickets:
            raise RuntimeError(f"pipeline answered {summary['succeeded']} of {tickets} tickets")
        self.log(f"    pipeline {tickets} tickets {' '.join(flags)}: {run.wall_s:.1f} s wall, "
                 f"{run.cpu_s:.1f} s CPU, {run.peak_rss_mb:.0f} MB peak RSS")
        _remove_tree(output)
        return run, summary

    def bare_client(self, tickets: int, base_url: str, concurrency: int) -> ChildRun:
        """Runs ``python -m benchmarks.bare_client`` on the same tickets."""
        return self.baseline("bare_client", tickets, base_url, concurrency)

    def baseline(self, module: str, tickets: int, base_url: str, concurrency: int,
                 *flags: str) -> ChildRun:
        """Runs ``python -m benchmarks.MODULE`` (a baseline client) on the same tickets.

        Raises:
            RuntimeError: when it fails or a request failed.
        """
        from transforms.llm import DEFAULT_SYSTEM_PROMPT  # pylint: disable=import-outside-toplevel
        cmd = [sys.executable, "-m", f"benchmarks.{module}", "--base_url", base_url,
               "--input", str(self.tickets(tickets)), "--concurrency", str(concurrency),
               "--system_prompt", DEFAULT_SYSTEM_PROMPT, "--max_tokens", str(MAX_TOKENS), *flags]
        run = run_child(cmd, timeout=3600)
        if run.returncode != 0:
            raise RuntimeError(f"{module} exited {run.returncode}: {run.stderr[-2000:]}"
                               f"{run.stdout[-500:]}")
        self.log(f"    {module} {' '.join(flags)} {tickets} tickets: {run.wall_s:.1f} s wall, "
                 f"{run.cpu_s:.1f} s CPU")
        return run


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def steady_state(per_second: list[dict]) -> dict[str, Any]:
    """Successful completions per second over the run's steady state.

    The buckets run from the first answer to the last. The steady state drops the first second
    (partial, and the limiter's start-up burst) and everything from the last second in which
    successes were still at least half the median rate: after it the pipeline has stopped
    sending and only the latency tail is being answered (that second is partial too).

    Returns:
        ``ok_per_sec``, ``seconds`` (length of the window), ``first`` and ``last`` (bucket
        seconds, inclusive), ``requests`` and ``rate_limited`` inside the window.
    """
    if not per_second:
        return {"ok_per_sec": 0.0, "seconds": 0, "first": None, "last": None,
                "requests": 0, "rate_limited": 0}
    buckets = {b["t"]: b for b in per_second}
    t0, t_end = min(buckets), max(buckets)
    series = [buckets.get(t, {"requests": 0, "ok": 0, "rate_limited": 0})
              for t in range(t0, t_end + 1)]
    median = statistics.median(b["ok"] for b in series)
    last_full = max(i for i, b in enumerate(series) if b["ok"] >= 0.5 * median)
    window = series[1:last_full]
    if not window:  # too short a run to have a steady state: use everything
        window = series
    return {"ok_per_sec": sum(b["ok"] for b in window) / len(window), "seconds": len(window),
            "first": t0 + (1 if len(window) < len(series) else 0),
            "last": t0 + last_full - 1, "requests": sum(b["requests"] for b in window),
            "rate_limited": sum(b["rate_limited"] for b in window)}


def _latency_flags() -> list[str]:
    return ["--latency_median_ms", f"{LATENCY_MEDIAN_MS:g}",
            "--latency_p99_ms", f"{LATENCY_P99_MS:g}", "--seed", "1"]


def scenario_utilization(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Figure 1: the pipeline against a limited simulator, with the same limits configured."""
    out: dict[str, Any] = {}
    rps = sizes.rpm / 60.0
    tickets = int(rps * sizes.rpm_secs)
    bench.log(f"  utilisation, RPM {sizes.rpm}: {tickets} tickets")
    with Simulator("--rpm", str(sizes.rpm), *_latency_flags()) as sim:
        _, summary = bench.pipeline(tickets, sim.base_url, "--requests_per_minute",
                                    str(sizes.rpm), "--max_concurrency",
                                    str(sizes.util_concurrency))
        stats = sim.stats()
    steady = steady_state(stats["per_second"])
    out["utilization"] = steady["ok_per_sec"] / rps
    out["rate_limited_fraction"] = stats["rate_limited"] / max(1, stats["requests"])
    out["details_rpm"] = {"rpm": sizes.rpm, "tickets": tickets, "steady": steady,
                          "requests": stats["requests"], "rate_limited": stats["rate_limited"],
                          "peak_concurrency": stats["peak_concurrency"],
                          "throttled_secs": summary["throttled_secs"],
                          "wall_s": summary["wall_secs"]}

    # Tokens: the simulator charges prompt tokens + max_tokens per request at admission.
    probe_cost = 135 + MAX_TOKENS  # ~ tokens of one synthetic ticket's request (refined below)
    tickets = int(sizes.tpm / 60.0 / probe_cost * sizes.rpm_secs)
    bench.log(f"  utilisation, TPM {sizes.tpm}: {tickets} tickets")
    with Simulator("--tpm", str(sizes.tpm), *_latency_flags()) as sim:
        _, summary = bench.pipeline(tickets, sim.base_url, "--tokens_per_minute",
                                    str(sizes.tpm), "--max_concurrency",
                                    str(sizes.util_concurrency))
        stats = sim.stats()
    steady = steady_state(stats["per_second"])
    cost = stats["prompt_tokens"] / max(1, stats["successful_completions"]) + MAX_TOKENS
    out["tpm_utilization"] = steady["ok_per_sec"] * cost / (sizes.tpm / 60.0)
    out["tpm_rate_limited_fraction"] = stats["rate_limited"] / max(1, stats["requests"])
    out["details_tpm"] = {"tpm": sizes.tpm, "tickets": tickets, "steady": steady,
                          "tokens_per_request": cost, "requests": stats["requests"],
                          "rate_limited": stats["rate_limited"],
                          "peak_concurrency": stats["peak_concurrency"],
                          "throttled_secs": summary["throttled_secs"],
                          "wall_s": summary["wall_secs"]}
    return out


def scenario_concurrency(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Figure 2: continuous window vs batch barrier, no limits, log-normal latency."""
    mean_s = lognormal_mean_s(LATENCY_MEDIAN_MS, LATENCY_P99_MS)
    ideal = sizes.concurrency / mean_s
    out: dict[str, Any] = {"details_concurrency": {"mean_latency_s": mean_s,
                                                   "ideal_tickets_per_s": ideal,
                                                   "max_concurrency": sizes.concurrency}}
    for dispatch, key, tickets in (
            ("continuous", "concurrency_efficiency", sizes.concurrency_tickets),
            ("barrier", "barrier_efficiency", sizes.barrier_tickets)):
        bench.log(f"  concurrency, {dispatch}: {tickets} tickets")
        with Simulator(*_latency_flags()) as sim:
            _, summary = bench.pipeline(tickets, sim.base_url, "--max_concurrency",
                                        str(sizes.concurrency), "--dispatch", dispatch)
            stats = sim.stats()
        steady = steady_state(stats["per_second"])
        out[key] = steady["ok_per_sec"] / ideal
        out["details_concurrency"][dispatch] = {
            "tickets": tickets, "steady": steady, "peak_concurrency": stats["peak_concurrency"],
            "end_to_end_tickets_per_s": summary["tickets_per_sec"],
            "end_to_end_efficiency": summary["tickets_per_sec"] / ideal,
            "measured_latency_ms_mean": summary["latency_ms_mean"],
            "wall_s": summary["wall_secs"]}
    return out


def _per_ticket(one: ChildRun, many: ChildRun, n: int) -> float:
    return (many.cpu_s - one.cpu_s) / (n - 1)


def scenario_overhead(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Figure 3: CPU per ticket of the pipeline and of the baselines, start-up subtracted."""
    n = sizes.overhead_tickets
    c = sizes.concurrency
    bench.log(f"  overhead: 1 and {n} tickets, pipeline and baselines")
    bench.tickets(n)  # made before the watch starts: its clock is the pipeline's start-up
    with Simulator() as sim:
        pipe_one, _ = bench.pipeline(1, sim.base_url, "--max_concurrency", str(c))
        with FirstRequestWatch(sim) as first:
            pipe_n, summary = bench.pipeline(n, sim.base_url, "--max_concurrency", str(c))
        steady = steady_state(sim.stats()["per_second"])
        bare_one = bench.bare_client(1, sim.base_url, c)
        bare_n = bench.bare_client(n, sim.base_url, c)
        sdk_one = bench.baseline("sdk_baseline", 1, sim.base_url, c)
        sdk_n = bench.baseline("sdk_baseline", n, sim.base_url, c)
        aio_one = bench.baseline("aiohttp_baseline", 1, sim.base_url, c)
        aio_n = bench.baseline("aiohttp_baseline", n, sim.base_url, c)
    pipe = _per_ticket(pipe_one, pipe_n, n)
    bare = _per_ticket(bare_one, bare_n, n)
    sdk = _per_ticket(sdk_one, sdk_n, n)
    aio = _per_ticket(aio_one, aio_n, n)
    # Too short a run has no steady state: then the rate with the 1-ticket wall subtracted.
    marginal = (n - 1) / max(1e-9, pipe_n.wall_s - pipe_one.wall_s)
    rate = steady["ok_per_sec"] if steady["seconds"] >= 2 else marginal

    def ratio(base: float) -> float:
        # At --smoke sizes a baseline's marginal CPU is noise, even <= 0: 1 us at least.
        return pipe / max(base, 1e-6)

    return {"cpu_per_ticket_s": pipe, "baseline_cpu_per_ticket_s": bare,
            "cpu_per_ticket_ratio": ratio(bare),
            "sdk_cpu_per_ticket_s": sdk, "bare_aiohttp_cpu_per_ticket_s": aio,
            "cpu_ratio_vs_sdk": ratio(sdk), "cpu_ratio_vs_bare_aiohttp": ratio(aio),
            "tickets_per_sec": rate, "first_request_secs": first.seconds,
            "startup_cpu_s": pipe_one.cpu_s, "baseline_startup_cpu_s": bare_one.cpu_s,
            "details_overhead": {"tickets": n, "pipeline_cpu_s": pipe_n.cpu_s,
                                 "pipeline_wall_s": pipe_n.wall_s,
                                 "bare_cpu_s": bare_n.cpu_s, "bare_wall_s": bare_n.wall_s,
                                 "pipeline_one_wall_s": pipe_one.wall_s,
                                 "bare_one_wall_s": bare_one.wall_s,
                                 "sdk": "AsyncOpenAI, aiohttp transport, with_raw_response + "
                                        "json.loads (no pydantic)",
                                 "sdk_cpu_s": sdk_n.cpu_s, "sdk_wall_s": sdk_n.wall_s,
                                 "sdk_startup_cpu_s": sdk_one.cpu_s,
                                 "bare_aiohttp_cpu_s": aio_n.cpu_s,
                                 "bare_aiohttp_wall_s": aio_n.wall_s,
                                 "bare_aiohttp_startup_cpu_s": aio_one.cpu_s,
                                 "tickets_per_sec_steady": steady,
                                 "tickets_per_sec_marginal": marginal,
                                 "tickets_per_sec_end_to_end": summary["tickets_per_sec"],
                                 "pipeline_peak_rss_mb": pipe_n.peak_rss_mb}}


def scenario_scaling(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Figure 4: wall time per ticket and peak RSS as the input grows (zero latency)."""
    rows: list[dict[str, Any]] = []
    timelines: dict[str, list] = {}
    with Simulator() as sim:
        for count in sizes.scaling:
            bench.log(f"  scaling: {count} tickets")
            run, summary = bench.pipeline(count, sim.base_url, "--max_concurrency",
                                          str(sizes.concurrency))
            previous = rows[-1] if rows else None
            marginal = ((run.wall_s - previous["wall_s"]) * 1000.0 / (count - previous["tickets"])
                        if previous else None)
            rows.append({"tickets": count, "wall_s": round(run.wall_s, 2),
                         "wall_ms_per_ticket": round(run.wall_s * 1000.0 / count, 3),
                         "marginal_wall_ms_per_ticket": (None if marginal is None
                                                         else round(marginal, 3)),
                         "cpu_s": round(run.cpu_s, 2),
                         "peak_rss_mb": round(run.peak_rss_mb, 1),
                         "pipeline_wall_s": summary["wall_secs"]})
            # ~40 points of the RSS curve: where memory grows (reading, grouping, calling).
            step = max(1, len(run.rss_timeline) // 40)
            timelines[str(count)] = run.rss_timeline[::step]
    return {"scaling": rows, "details_scaling": {"rss_timeline_mb": timelines}}


def scenario_capacity(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """Figure 5: the simulator's own ceiling, so the other figures are not the simulator's."""
    bench.log(f"  simulator capacity: {sizes.capacity_secs:g} s")
    return {"simulator_rps": measure_capacity(seconds=sizes.capacity_secs, concurrency=64)}


SCENARIOS = (scenario_capacity, scenario_utilization, scenario_concurrency, scenario_overhead,
             scenario_scaling)


def format_table(figures: dict[str, Any]) -> str:
    """The figures and their targets as a plain-text table."""
    def num(key: str, fmt: str = "{:.3f}") -> str:
        value = figures.get(key)
        return "—" if value is None else fmt.format(value)

    rows = [
        ("utilization (RPM)", num("utilization"), ">= 0.95"),
        ("rate_limited_fraction", num("rate_limited_fraction", "{:.4f}"), "<= 0.005"),
        ("tpm_utilization", num("tpm_utilization"), ">= 0.95"),
        ("tpm_rate_limited_fraction", num("tpm_rate_limited_fraction", "{:.4f}"), "<= 0.005"),
        ("concurrency_efficiency", num("concurrency_efficiency"), ">= 0.90"),
        ("barrier_efficiency", num("barrier_efficiency"), "(baseline)"),
        ("cpu_per_ticket_s", num("cpu_per_ticket_s", "{:.5f}"), ""),
        ("baseline_cpu_per_ticket_s", num("baseline_cpu_per_ticket_s", "{:.5f}"), ""),
        ("cpu_per_ticket_ratio", num("cpu_per_ticket_ratio", "{:.2f}"), "<= 2"),
        ("sdk_cpu_per_ticket_s", num("sdk_cpu_per_ticket_s", "{:.5f}"), "(SDK, aiohttp, raw)"),
        ("bare_aiohttp_cpu_per_ticket_s", num("bare_aiohttp_cpu_per_ticket_s", "{:.5f}"), ""),
        ("cpu_ratio_vs_sdk", num("cpu_ratio_vs_sdk", "{:.2f}"), "<= 1.25"),
        ("cpu_ratio_vs_bare_aiohttp", num("cpu_ratio_vs_bare_aiohttp", "{:.1f}"), ""),
        ("tickets_per_sec", num("tickets_per_sec", "{:.0f}"), "(one process, zero latency)"),
        ("first_request_secs", num("first_request_secs", "{:.2f}"), "<= 10"),
        ("startup_cpu_s", num("startup_cpu_s", "{:.2f}"), "(1-ticket run)"),
        ("baseline_startup_cpu_s", num("baseline_startup_cpu_s", "{:.2f}"), ""),
        ("simulator_rps", num("simulator_rps", "{:.0f}"), ""),
    ]
    for row in figures.get("scaling", []):
        rows.append((f"scaling {row['tickets']:>9,}", f"{row['wall_ms_per_ticket']:.3f} ms/ticket, "
                     f"{row['peak_rss_mb']:.0f} MB peak RSS", "RSS <= 4096 MB at 1M"))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"{'figure'.ljust(width)}  {'value'.ljust(value_width)}  target"]
    lines += [f"{a.ljust(width)}  {b.ljust(value_width)}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: runs every scenario, prints the table, writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small counts, short runs (~3 min)")
    mode.add_argument("--full", action="store_true", help="also scale to 1M tickets")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny counts: proves every scenario runs (~1 min); figures mean nothing")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--workdir", help="keep ticket files and outputs here (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    mode_name = ("quick" if args.quick else "full" if args.full else "smoke" if args.smoke
                 else "default")
    sizes = {"quick": QUICK, "full": FULL, "smoke": SMOKE}.get(mode_name, DEFAULT)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    figures: dict[str, Any] = {"mode": mode_name, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ticketflow-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, log=log)
        log(f"benchmarks ({mode_name} mode) in {workdir}")
        for scenario in SCENARIOS:
            found = scenario(bench, sizes)
            figures.update(found)
            numbers = [f"{k}={v:.4g}" for k, v in found.items() if isinstance(v, float)]
            if numbers:
                log("    -> " + ", ".join(numbers))
    figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
    details = {k: figures.pop(k) for k in list(figures) if k.startswith("details_")}
    figures["details"] = details
    print(format_table(figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    missing = [key for key in FIGURES if figures.get(key) is None]
    if missing:
        log(f"missing figures: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
