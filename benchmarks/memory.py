"""Peak memory of the pipeline against its input size, per runner, process by process.

For each size it runs ``python -m pipeline`` on that many generated tickets against a zero-latency
simulator (its own process) and polls, every 0.2 s, the RSS of every process of the pipeline's
tree — the Python driver and SDK worker and, with ``--runner PrismRunner``, the ``prism`` job
server it starts — and prints one JSON line per size: peak RSS of the tree and of each process
name, the RSS when the first request was answered (what reading and grouping the input cost),
wall and CPU seconds::

    python -m benchmarks.memory --sizes 100000,300000 --runner FnApiRunner
    python -m benchmarks.memory --sizes 100000 --runner PrismRunner \
        --prism_location /path/to/prism
    python -m benchmarks.memory --sizes 300000 --mode budget   # no calls: minutes, not hours

Chunked against one pass (``--local_chunk_tickets``, ``pipeline/chunks.py``): ``--chunks``
lists the settings to run for each size (0: one pass over the whole input); one pass is skipped
above ``--max_unchunked`` tickets (it holds the whole input in memory, and takes as long)::

    python -m benchmarks.memory --sizes 100000,1000000,2000000 --chunks 0,50000 \
        --max_unchunked 300000

Each row also has ``first_request_s``: from the process's start to the first chat request the
simulator saw (in flight or answered; its ``/stats`` polled with the RSS). With
``--until_first_request`` each run is killed there: the time to the first request of inputs too
large to run whole (10M tickets), and the memory until then.

``--mode budget`` sets ``--max_cost_usd`` to a billionth of a dollar: every ticket flows through
read, validate, dedupe, batch and the call step, which turns it into a dead letter
``budget_exhausted`` without a request, and the dead letters are written. The groupings hold the
same elements as in a real run; only the answers (and their ~1 KiB of text) are missing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.run import MAX_TOKENS, Bench, Simulator, _env, _remove_tree

_REPO = Path(__file__).resolve().parent.parent


def tree_rss_by_name(pid: int) -> dict[str, int]:
    """RSS in kB of ``pid`` and its descendants, summed by process name (Linux /proc)."""
    out: collections.Counter[str] = collections.Counter()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0])
            out[fields["Name"].strip()] += rss
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except (OSError, ValueError, KeyError):
            continue
    return dict(out)


def measure(cmd: Sequence[str], sim: Simulator, timeout: float, interval: float = 0.2,
            until_first_request: bool = False) -> dict:
    """Runs ``cmd``; returns its peaks (tree and per process name), RSS timeline, wall and CPU.

    Args:
        until_first_request: Kill the run once the simulator saw its first request (the time
            to it, and the memory until then, of an input too large to run whole).

    Raises:
        RuntimeError: when it runs past ``timeout`` (it is killed).
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(list(cmd), cwd=_REPO, env=_env(), stdout=subprocess.DEVNULL,
                                   stderr=err, text=True)
        peaks: collections.Counter[str] = collections.Counter()
        state = {"peak": 0, "at_first_answer": None, "first_request": None, "timeline": []}
        done = threading.Event()

        def poll() -> None:
            while not done.wait(interval):
                by_name = tree_rss_by_name(process.pid)
                total = sum(by_name.values())
                state["peak"] = max(state["peak"], total)
                for name, kb in by_name.items():
                    peaks[name] = max(peaks[name], kb)
                state["timeline"].append((round(time.perf_counter() - started, 1),
                                          round(total / 1024.0)))
                if state["at_first_answer"] is None:
                    stats = sim.stats()
                    now = round(time.perf_counter() - started, 1)
                    if state["first_request"] is None and stats["requests"] + stats.get(
                            "in_flight", 0) > 0:
                        state["first_request"] = now
                        state["cpu_at_first_request"] = _cpu_secs(process.pid)
                        if until_first_request:
                            process.kill()
                    if stats["requests"] > 0:
                        state["at_first_answer"] = (now, round(total / 1024.0))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(process.pid, 0) if timeout is None else _wait(
                process, started + timeout)
        finally:
            done.set()
            poller.join()
        err.seek(0)
        stderr = err.read()
    step = max(1, len(state["timeline"]) // 30)
    return {"exit": os.waitstatus_to_exitcode(status),
            "wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(max(state["peak"], usage.ru_maxrss) / 1024.0),
            "peak_rss_mb_by_process": {k: round(v / 1024.0) for k, v in peaks.most_common()},
            "first_request_s": state["first_request"],
            # The driver's CPU until then: the same on an idle and on a shared machine.
            "cpu_s_at_first_request": state.get("cpu_at_first_request"),
            "rss_mb_at_first_answer": state["at_first_answer"],
            "rss_timeline_mb": state["timeline"][::step], "stderr_tail": stderr[-1500:]}


def _cpu_secs(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def _wait(process: subprocess.Popen, deadline: float):
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return pid, status, usage
        if time.perf_counter() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            raise RuntimeError(f"timed out: {' '.join(process.args)[:200]}")
        time.sleep(0.05)


def pipeline_cmd(tickets: Path, output: Path, base_url: str, runner: str,
                 prism_location: str | None, mode: str,
                 chunk_tickets: int | None = None) -> list[str]:
    """The ``python -m pipeline`` command line of one measured run.

    Args:
        chunk_tickets: ``--local_chunk_tickets`` (None: the pipeline's default).
    """
    cmd = [sys.executable, "-m", "pipeline", "--input", str(tickets), "--output", str(output),
           "--overwrite", "--base_url", base_url, "--max_tokens", str(MAX_TOKENS),
           "--log_level", "WARNING", "--quiet", "--runner", runner]
    if chunk_tickets is not None:
        cmd += ["--local_chunk_tickets", str(chunk_tickets)]
    if runner == "PrismRunner":
        cmd += ["--environment_type", "LOOPBACK"]
        if prism_location:
            cmd += ["--prism_location", prism_location]
    if mode == "budget":
        cmd += ["--max_cost_usd", "0.000000001"]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: one JSON line per size on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000", help="comma-separated ticket counts")
    parser.add_argument("--runner", default="FnApiRunner", choices=("FnApiRunner", "PrismRunner"))
    parser.add_argument("--prism_location", help="the prism binary (PrismRunner)")
    parser.add_argument("--mode", choices=("full", "budget"), default="full",
                        help="full: every ticket answered; budget: no request sent (see above)")
    parser.add_argument("--chunks", default=None,
                        help="comma-separated --local_chunk_tickets settings to run per size "
                        "(0: one pass); default: the pipeline's default only")
    parser.add_argument("--max_unchunked", type=int, default=None,
                        help="skip one-pass runs (chunks 0) above this many tickets")
    parser.add_argument("--until_first_request", action="store_true",
                        help="kill each run at its first request (time and memory until then)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--workdir", help="keep ticket files here (default: a temporary dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ticketflow-memory-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, log=lambda m: print(m, file=sys.stderr, flush=True))
        with Simulator() as sim:
            settings = ([None] if args.chunks is None
                        else [int(c) for c in args.chunks.split(",")])
            for size in (int(s) for s in args.sizes.split(",")):
                tickets = bench.tickets(size)
                for chunk in settings:
                    if chunk == 0 and args.max_unchunked and size > args.max_unchunked:
                        continue
                    print(json.dumps(_measured_row(args, sim, tickets, size, chunk,
                                                   workdir / f"out-{size}-{chunk}")), flush=True)
    return 0


def _measured_row(args: argparse.Namespace, sim: Simulator, tickets: Path, size: int,
                  chunk: int | None, output: Path) -> dict:
    """One measured run, as the JSON row printed."""
    sim.reset()
    found = measure(pipeline_cmd(tickets, output, sim.base_url, args.runner,
                                 args.prism_location, args.mode, chunk), sim, args.timeout,
                    until_first_request=args.until_first_request)
    summary_path = output / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    row = {"tickets": size, "runner": args.runner, "mode": args.mode,
           "local_chunk_tickets": chunk, "chunks": summary.get("chunks"), **found,
           "succeeded": summary.get("succeeded"),
           "dead_lettered": summary.get("dead_lettered"),
           "ledger_balanced": summary.get("ledger_balanced")}
    if found["exit"] == 0 or args.until_first_request:
        row.pop("stderr_tail")
    if output.exists():
        _remove_tree(output)
    return row


if __name__ == "__main__":
    sys.exit(main())
