"""Shared fixtures: an in-process simulator and a runner for ``python -m pipeline`` subprocesses."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def pytest_collection_modifyitems(config, items):
    """A test that runs ``python -m pipeline`` (the ``run_pipeline`` fixture) is marked ``e2e``.

    The slow tests (the benchmarks' smoke runs) are dealt out: ``--dist worksteal`` gives each
    worker a contiguous quarter of the list, and a worker keeps the tests at the front of its
    queue (others steal from the back), so each quarter starts with its share of them rather
    than one worker running them all at the end.
    """
    for item in items:
        if "run_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
    # On a worker, xdist says how many there are; the order must be the same on each.
    workers = getattr(config, "workerinput", {}).get("workercount") or 0
    if workers > 1:
        slow = [item for item in items if item.get_closest_marker("slow")]
        rest = [item for item in items if not item.get_closest_marker("slow")]
        cut = [len(rest) * k // workers for k in range(workers + 1)]
        items[:] = [item for k in range(workers)
                    for item in slow[k::workers] + rest[cut[k]:cut[k + 1]]]


@pytest.fixture
def simulator_factory():
    """Starts simulators in this process (``start(**flags)``); closes them after the test."""
    from simulator import start

    handles = []

    def make(**flags):
        handle = start(**flags)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


class PipelineRun:
    """The outcome of one ``python -m pipeline`` subprocess run."""

    def __init__(self, proc: subprocess.CompletedProcess, output: Path):
        self.proc = proc
        self.output = output

    @property
    def returncode(self) -> int:
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return self.proc.stdout

    @property
    def stderr(self) -> str:
        return self.proc.stderr

    def summary(self) -> dict:
        return json.loads((self.output / "summary.json").read_text())

    def _jsonl(self, basename: str) -> List[dict]:
        records = []
        for path in sorted(glob.glob(str(self.output / f"{basename}-*.jsonl"))):
            with open(path, encoding="utf-8") as handle:
                records.extend(json.loads(line) for line in handle if line.strip())
        return records

    def results(self) -> List[dict]:
        parquet = sorted(glob.glob(str(self.output / "results-*.parquet")))
        if parquet:
            import pyarrow.parquet as pq
            rows = []
            for path in parquet:
                rows.extend(pq.read_table(path).to_pylist())
            return rows
        return self._jsonl("results")

    def dead_letters(self) -> List[dict]:
        return self._jsonl("dead_letter")

    def dead_letters_by_id(self) -> Dict[str, dict]:
        return {d["id"]: d for d in self.dead_letters()}


@pytest.fixture
def run_pipeline(tmp_path):
    """Runs ``python -m pipeline`` with the given flags (``--output`` added) in a subprocess."""
    counter = [0]

    def run(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 240,
            output: Optional[Path] = None) -> PipelineRun:
        counter[0] += 1
        out = output or (tmp_path / f"out{counter[0]}")
        full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "pipeline", "--output", str(out), *args]
        proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        return PipelineRun(proc, out)

    return run


@pytest.fixture(scope="session")
def pubsub_server():
    """One Pub/Sub emulator per test process (per xdist worker), shared by its tests: give topics
    and subscriptions names of their own (``tests.pubsub_server.unique_name``). Skips when the
    emulator is not built (``.ci/install_runners.sh``)."""
    from tests.pubsub_server import PubsubServer  # it imports this module: import it late

    with PubsubServer() as server:
        yield server


def write_jsonl(path: Path, records) -> Path:
    """Writes dicts (or raw strings, written as they are) one per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record if isinstance(record, str) else json.dumps(record))
            handle.write("\n")
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminates a helper server started by a test, killing it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
