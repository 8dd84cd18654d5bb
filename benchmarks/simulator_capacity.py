"""How many chat completions per second the simulator serves at zero latency.

The simulator runs in a separate process (``python -m simulator --port 0``); this process drives
it with an aiohttp client at high concurrency and counts HTTP 200 answers:

    python -m benchmarks.simulator_capacity            # 10 s at concurrency 64
    python -m benchmarks.simulator_capacity --quick    # 3 s
    python -m benchmarks.simulator_capacity --processes 2   # two client processes

A larger harness can call ``measure_capacity(seconds, concurrency)`` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

_REPO = Path(__file__).resolve().parent.parent
_PAYLOAD = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful support agent."},
        {"role": "user", "content": "Ticket ID: T-000123\nSubject: Cannot log in after password "
                                    "reset\n\nI reset my password and now the app rejects it."},
    ],
    "max_tokens": 256,
}).encode()


def _start_simulator(extra_flags: Sequence[str] = ()) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", *extra_flags],
        cwd=_REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return process, line[len(prefix):]


async def _drive(base_url: str, seconds: float, concurrency: int,
                 warmup: float) -> tuple[int, int, float, int]:
    url = f"{base_url}/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    counts = {"ok": 0, "other": 0, "all": 0}
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        measuring = [False]
        stop_at = loop.time() + warmup + seconds

        async def worker() -> None:
            while loop.time() < stop_at:
                async with session.post(url, data=_PAYLOAD, headers=headers) as response:
                    await response.read()
                    counts["all"] += 1
                    if measuring[0]:
                        counts["ok" if response.status == 200 else "other"] += 1

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring[0] = True
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return counts["ok"], counts["other"], elapsed, counts["all"]


def _cpu_seconds(pid: int) -> float | None:
    """Returns the user+system CPU time of ``pid`` (Linux only; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive_in_process(base_url: str, seconds: float, concurrency: int,
                      warmup: float) -> tuple[int, int, float, int]:
    return asyncio.run(_drive(base_url, seconds, concurrency, warmup))


def measure_capacity(seconds: float = 10.0, concurrency: int = 64, processes: int = 1) -> float:
    """Starts a simulator process, loads it for ``seconds`` and returns successful requests/s.

    Args:
        seconds: Measured duration (after a short warm-up).
        concurrency: Requests kept in flight, split across the client processes.
        processes: Client processes (see ``measure``).

    Returns:
        HTTP 200 responses per second.

    Raises:
        RuntimeError: If the simulator does not start or answers anything but 200.
    """
    return measure(seconds, concurrency, processes)["requests_per_sec"]


def measure(seconds: float = 10.0, concurrency: int = 64, processes: int = 1) -> dict[str, float]:
    """Like ``measure_capacity``, with details.

    Args:
        seconds: Measured duration (after a short warm-up).
        concurrency: Requests kept in flight, split across the client processes.
        processes: Client processes. 1 drives from this process; more use a process pool, for
            when one client process cannot saturate the server.

    Returns:
        ``requests_per_sec`` (HTTP 200s per second), ``requests``, ``seconds``, and on Linux
        ``server_cpu_us_per_request``: the simulator process's CPU time per request, which does
        not depend on what else the machine is doing.

    Raises:
        RuntimeError: If the simulator does not start or answers anything but 200.
    """
    process, base_url = _start_simulator()
    warmup = min(1.0, seconds / 5)
    cpu_before = _cpu_seconds(process.pid)
    try:
        if processes <= 1:
            results = [_drive_in_process(base_url, seconds, concurrency, warmup)]
        else:
            share = max(1, concurrency // processes)
            with concurrent.futures.ProcessPoolExecutor(processes) as pool:
                futures = [pool.submit(_drive_in_process, base_url, seconds, share, warmup)
                           for _ in range(processes)]
                results = [future.result() for future in futures]
        cpu_after = _cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait(10)
    ok = sum(r[0] for r in results)
    other = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    if other:
        raise RuntimeError(f"{other} non-200 responses during the benchmark")
    result = {"requests_per_sec": ok / elapsed, "requests": ok, "seconds": elapsed}
    total = sum(r[3] for r in results)  # with the warm-up, which the CPU time also covers
    if cpu_before is not None and cpu_after is not None and total:
        result["server_cpu_us_per_request"] = (cpu_after - cpu_before) * 1e6 / total
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints requests/s."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulator_capacity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s instead of --seconds")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    result = measure(seconds, args.concurrency, args.processes)
    print(f"simulator capacity: {result['requests_per_sec']:,.0f} requests/s ({seconds:g} s, "
          f"concurrency {args.concurrency}, {args.processes} client process(es), "
          f"{os.cpu_count()} CPUs)")
    if "server_cpu_us_per_request" in result:
        per_request = result["server_cpu_us_per_request"]
        print(f"server CPU per request: {per_request:.0f} us "
              f"(~{1e6 / per_request:,.0f} requests/s per fully available core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
