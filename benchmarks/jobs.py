"""Several ``python -m pipeline`` jobs at once, and a provider that can die, for benchmarks.

:mod:`benchmarks.run` measures one child at a time (``run_child`` blocks); the quota benchmark
needs jobs that run side by side against one provider, the provider killed and restarted on
the same port, and optionally the pipeline of an older commit (``git archive``) to compare with::

    job = Job.start("a", ["--input", str(tickets), "--base_url", url], workdir)
    summary = job.finish(timeout=600)          # summary.json; raises if the job failed
    job.kill()                                 # or cut it short, worker processes and all
    fairness({"a": 6.5, "b": 6.7})             # shares, min/max, Jain's index

    with Provider(free_port(), "--rpm", "1200") as provider:
        provider.stop()                         # the provider goes away mid-run
        provider.start()                        # and comes back on the same port
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.run import MAX_TOKENS, _env, terminate

_REPO = Path(__file__).resolve().parent.parent


def env_for(src: Path | None) -> dict[str, str]:
    """The environment of a child that must import the code of ``src`` (ours when None).

    No ``OPENAI_API_KEY`` (the simulator needs none), and ``src`` first on ``PYTHONPATH``.
    """
    env = _env()
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def source_tree(revision: str, dest: Path) -> Path:
    """Extracts the files of ``revision`` of this repository into ``dest`` (``git archive``).

    Used to run the pipeline as it was before a change, beside today's simulator and benchmark.

    Raises:
      subprocess.CalledProcessError: when the revision is unknown.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(_REPO), "archive", "--format=tar", revision],
                       stdout=archive, check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(dest, filter="data")
    return dest


class Job:
    """One ``python -m pipeline`` child, started in its own session (so its workers stop too).

    Use :meth:`start`; the job's stdout and stderr go to ``OUTPUT.log``.
    """

    def __init__(self, name: str, process: subprocess.Popen, output: Path, log_path: Path):
        self.name = name
        self.process = process
        self.output = output
        self.log_path = log_path
        self.started = time.time()
        self.wall_s: float | None = None

    @classmethod
    def start(cls, name: str, flags: Sequence[str], workdir: Path,
              src: Path | None = None) -> Job:
        """Starts ``python -m pipeline --output WORKDIR/out-NAME --overwrite FLAGS``.

        Args:
          name: The job's name (its output directory and log are named after it).
          flags: The pipeline's flags (input, base URL, limits ...).
          workdir: Where the output directory goes.
          src: Run the pipeline of this source tree (see :func:`source_tree`); ours when None.
        """
        output = workdir / f"out-{name}"
        log_path = workdir / f"out-{name}.log"
        cmd = [sys.executable, "-m", "pipeline", "--output", str(output), "--overwrite",
               "--max_tokens", str(MAX_TOKENS), "--log_level", "WARNING", *flags]
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(cmd, cwd=src or _REPO, env=env_for(src), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(name, process, output, log_path)

    def finish(self, timeout: float) -> dict[str, Any]:
        """Waits for the job and returns its ``summary.json``.

        Raises:
          RuntimeError: when it exits non-zero or runs past ``timeout`` (then it is killed).
        """
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"job {self.name} ran past {timeout:.0f} s") from None
        self.wall_s = time.time() - self.started
        if self.process.returncode != 0:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"job {self.name} exited {self.process.returncode}: {tail}")
        return json.loads((self.output / "summary.json").read_text())

    def kill(self) -> None:
        """Kills the job's whole session (its worker processes too), if it still runs."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


def provider_window(stats: Mapping[str, Any], start: float, end: float) -> dict[str, Any]:
    """The provider's whole seconds inside [start, end): successes/s, requests and 429s.

    The simulator's ``per_second`` buckets count seconds since its start (``started_at``).
    """
    first = int(start - stats["started_at"]) + 1
    last = int(end - stats["started_at"])
    buckets = [b for b in stats["per_second"] if first <= b["t"] < last]
    seconds = max(0, last - first)
    ok = sum(b["ok"] for b in buckets)
    return {"seconds": seconds, "ok_per_sec": ok / seconds if seconds else 0.0,
            "requests": sum(b["requests"] for b in buckets),
            "rate_limited": sum(b["rate_limited"] for b in buckets),
            "ok_by_second": [b["ok"] for b in buckets]}


def fairness(rates: Mapping[str, float]) -> dict[str, Any]:
    """Each job's share of the answers, the smallest share ÷ the largest, and Jain's index."""
    total = sum(rates.values())
    shares = {name: (rate / total if total else 0.0) for name, rate in rates.items()}
    squares = sum(r * r for r in rates.values())
    return {"shares": shares,
            "min_over_max": min(rates.values()) / max(rates.values()) if total else 0.0,
            "jain": total * total / (len(rates) * squares) if squares else 0.0}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Provider:
    """``python -m simulator --port PORT FLAGS`` that can be stopped and started again.

    Its stats start from zero at every start; :attr:`lifetimes` keeps the stats of every
    stopped lifetime.

    Args:
      port: A fixed port (so that the pipeline's base URL survives a restart).
      flags: The simulator's flags.
    """

    def __init__(self, port: int, *flags: str):
        self.port = port
        self.flags = flags
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen | None = None
        self.lifetimes: list[dict[str, Any]] = []

    def start(self, timeout: float = 30.0) -> Provider:
        """Starts the simulator; waits for its ``listening on`` line.

        Raises:
          RuntimeError: when it does not start (e.g. the port is still taken).
        """
        deadline = time.monotonic() + timeout
        while True:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--port", str(self.port), *self.flags],
                cwd=_REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True)
            line = self.process.stdout.readline()
            if line.startswith("listening on "):
                return self
            self.process.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start on port {self.port}: {line!r}")
            time.sleep(0.5)  # the old socket may linger a moment

    def stats(self) -> dict[str, Any]:
        """The running simulator's ``GET /stats``."""
        root = self.base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Keeps the stats of this lifetime, then terminates the simulator."""
        if self.process is None:
            return
        try:
            self.lifetimes.append(self.stats())
        except OSError:
            pass
        terminate(self.process)
        self.process = None

    def __enter__(self) -> Provider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
