"""Smoke tests of the benchmark suites: ``python -m benchmarks.run --smoke`` (and the quota and
streaming benchmarks' ``--smoke``) yields every figure.

Only the presence and type of each figure is asserted, never a measured value: timings depend
on the machine, and a test that fails on a busy CI runner teaches nothing. (Exit codes and
tickets lost do not depend on it: the streaming one checks those.)
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_streaming import needs_prism

pytestmark = pytest.mark.slow

FIGURES = ("utilization", "rate_limited_fraction", "tpm_utilization", "concurrency_efficiency",
           "barrier_efficiency", "cpu_per_ticket_s", "baseline_cpu_per_ticket_s",
           "cpu_per_ticket_ratio", "sdk_cpu_per_ticket_s", "bare_aiohttp_cpu_per_ticket_s",
           "cpu_ratio_vs_sdk", "tickets_per_sec", "first_request_secs", "simulator_rps")


@pytest.mark.timeout(900)
def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in FIGURES:
        assert isinstance(figures.get(key), (int, float)), f"{key} missing or not a number"
    assert figures["scaling"], "scaling has no rows"
    for row in figures["scaling"]:
        assert {"tickets", "wall_s", "peak_rss_mb"} <= set(row), row
        assert isinstance(row["peak_rss_mb"], (int, float))
    # The table printed for people names every figure too.
    for key in FIGURES:
        assert key in proc.stdout


@pytest.mark.timeout(900)
def test_quick_quota_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.quota --smoke``: every scenario at its smallest, every key."""
    from benchmarks.quota import FIGURES as QUOTA_FIGURES

    out = tmp_path / "quota.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.quota", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in QUOTA_FIGURES:
        assert isinstance(figures.get(key), (int, float)), f"{key} missing or not a number"
        assert key in proc.stdout, f"{key} not in the printed table"
    # The shares of the three jobs are reported, whatever they are.
    shares = figures["details"]["details_shared_quota"]["job_shares"]
    assert set(shares) == {"c", "a", "b"}
    assert figures["load_average"], "no load average recorded"


@needs_prism
@pytest.mark.timeout(300)
def test_smoke_stream_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.stream --smoke``: every point at windows of seconds, every key."""
    from benchmarks.stream import FIGURES as STREAM_FIGURES
    from tests.pubsub_server import emulator_binary

    emulator_binary()  # skips when the Pub/Sub emulator is not built
    out = tmp_path / "stream.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.stream", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in STREAM_FIGURES:
        assert isinstance(figures.get(key), (bool, int, float)), f"{key} missing or not a number"
        assert key in proc.stdout, f"{key} not in the printed table"
    # Exit codes and accounting do not depend on the machine's speed.
    assert figures["sigint_exit_code"] == 130 and figures["sigint_restart_exit_code"] == 130
    assert figures["steady_lost"] == figures["overload_lost"] == figures["sigint_lost"] == 0
    assert figures["priority_lost"] == 0


@pytest.mark.timeout(300)
def test_smoke_caching_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.caching --smoke``: both scenarios at a few tickets, every key."""
    from benchmarks.caching import FIGURES as CACHING_FIGURES

    out = tmp_path / "caching.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.caching", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in CACHING_FIGURES:
        assert isinstance(figures.get(key), (int, float)), f"{key} missing or not a number"
        assert key in proc.stdout, f"{key} not in the printed table"
    assert figures["details"]["details_anthropic"]["runs"]["on"]["summary"]["provider"] == \
        "anthropic"


@pytest.mark.timeout(600)
def test_smoke_endpoints_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.endpoints --smoke``: every scenario at its smallest, every key."""
    from benchmarks.endpoints import FIGURES as ENDPOINTS_FIGURES

    out = tmp_path / "endpoints.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.endpoints", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ENDPOINTS_FIGURES:
        assert isinstance(figures.get(key), (int, float)), f"{key} missing or not a number"
        assert key in proc.stdout, f"{key} not in the printed table"
    # Tickets lost do not depend on the machine: none, in every scenario.
    assert figures["spread_dead_letters"] == figures["kill_dead_letters"] == 0
    assert figures["fallback_dead_letters"] == 0


@pytest.mark.timeout(600)
def test_smoke_providers_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.providers --smoke``: a limit binding on each provider."""
    from benchmarks.providers import SMOKE_POINTS as POINTS
    from benchmarks.providers import figures_of

    PROVIDER_FIGURES = figures_of(POINTS)

    out = tmp_path / "providers.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.providers", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in PROVIDER_FIGURES:
        assert isinstance(figures.get(key), (int, float)), f"{key} missing or not a number"
    for name in POINTS:
        assert name in proc.stdout, f"{name} not in the printed table"
        # Not a timing: no ticket is lost and the ledger balances on any machine.
        assert figures[f"{name}_lost"] == 0 and figures[f"{name}_ledger_balanced"] is True


@pytest.mark.timeout(600)
def test_smoke_adaptive_benchmark_writes_every_figure(tmp_path):
    """``python -m benchmarks.adaptive --smoke``: auto and the fixed settings, every key."""
    from benchmarks.adaptive import FIGURES as ADAPTIVE_FIGURES

    out = tmp_path / "adaptive.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.adaptive", "--smoke", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ADAPTIVE_FIGURES:
        # A busy runner may never reach 95 % of the peak in a smoke run's seconds: None then.
        assert isinstance(figures.get(key), (int, float)) or (
            key == "auto_secs_to_95pct_peak" and key in figures), f"{key} missing"
        assert key in proc.stdout, f"{key} not in the printed table"
    assert figures["details"]["details_auto"]["concurrency_by_time"]
    assert figures["load_average"], "no load average recorded"
