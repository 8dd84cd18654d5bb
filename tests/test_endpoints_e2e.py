"""``--endpoints`` end to end: ``python -m pipeline`` against two simulators, the real client."""

from __future__ import annotations

import socket

from tests.conftest import write_jsonl

FAST_RETRIES = ("--initial_backoff_secs", "0.01", "--max_backoff_secs", "0.05")


def _tickets(tmp_path, n):
    return write_jsonl(tmp_path / "t.jsonl", [
        {"id": f"T-{i:04d}", "subject": f"Subject {i}", "body": f"Ticket body {i}."}
        for i in range(n)])


def _closed_port_url() -> str:
    """A base URL where nothing listens (an endpoint that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _file(tmp_path, *entries) -> str:
    lines = ["endpoints:"]
    for entry in entries:
        lines.append("  - " + "\n    ".join(f"{k}: {v}" for k, v in entry.items()))
    path = tmp_path / "endpoints.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_tickets_spread_by_capacity_and_results_name_the_endpoint(
        run_pipeline, simulator_factory, tmp_path):
    small = simulator_factory(rpm=600, burst_secs=1, seed=1)
    large = simulator_factory(rpm=1200, burst_secs=1, seed=2)
    endpoints = _file(tmp_path,
                      {"name": "small", "base_url": small.base_url, "requests_per_minute": 600,
                       "model": "gpt-4o-mini"},
                      {"name": "large", "base_url": large.base_url, "requests_per_minute": 1200,
                       "model": "gpt-4.1-mini"})
    run = run_pipeline("--input", str(_tickets(tmp_path, 150)), "--endpoints", endpoints,
                       *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 150 and summary["dead_lettered"] == 0
    assert summary["ledger_balanced"] is True
    figures = summary["endpoints"]
    assert set(figures) == {"small", "large"}
    # In proportion to capacity (1:2), not round-robin (1:1).
    assert 0.55 <= figures["large"]["share"] <= 0.78, figures
    assert figures["small"]["succeeded"] + figures["large"]["succeeded"] == 150
    assert small.stats()["successful_completions"] == figures["small"]["succeeded"]
    assert large.stats()["successful_completions"] == figures["large"]["succeeded"]
    by_endpoint = {}
    for result in run.results():
        by_endpoint.setdefault(result["endpoint"], set()).add(result["model"])
    assert by_endpoint == {"small": {"gpt-4o-mini"}, "large": {"gpt-4.1-mini"}}
    assert "endpoint large" in run.stdout
    assert "Endpoints" in (run.output / "report.html").read_text()


def test_an_endpoint_down_leaves_every_ticket_to_the_other(
        run_pipeline, simulator_factory, tmp_path):
    up = simulator_factory(rpm=3000, burst_secs=1, seed=3)
    endpoints = _file(tmp_path,
                      {"name": "down", "base_url": _closed_port_url(),
                       "requests_per_minute": 3000},
                      {"name": "up", "base_url": up.base_url, "requests_per_minute": 3000})
    run = run_pipeline("--input", str(_tickets(tmp_path, 120)), "--endpoints", endpoints,
                       "--output_format", "parquet", *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 120 and summary["dead_lettered"] == 0, summary
    figures = summary["endpoints"]
    assert figures["up"]["succeeded"] == 120 and figures["down"]["succeeded"] == 0
    assert figures["down"]["errors"] > 0  # it was tried, then left alone
    assert {r["endpoint"] for r in run.results()} == {"up"}


def test_a_fallback_takes_only_what_the_primary_cannot(
        run_pipeline, simulator_factory, tmp_path):
    primary = simulator_factory(rpm=3000, burst_secs=1, seed=4)
    spare = simulator_factory(rpm=3000, burst_secs=1, seed=5)
    tickets = _tickets(tmp_path, 50)
    # Our limit under the provider's: the primary never refuses, so the fallback gets nothing.
    both_up = _file(tmp_path,
                    {"name": "main", "base_url": primary.base_url, "requests_per_minute": 1500},
                    {"name": "spare", "base_url": spare.base_url, "role": "fallback"})
    run = run_pipeline("--input", str(tickets), "--endpoints", both_up, *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    figures = run.summary()["endpoints"]
    assert figures["main"]["succeeded"] == 50 and figures["spare"]["requests"] == 0
    assert spare.stats()["requests"] == 0

    main_down = _file(tmp_path,
                      {"name": "main", "base_url": _closed_port_url(),
                       "requests_per_minute": 3000},
                      {"name": "spare", "base_url": spare.base_url, "role": "fallback"})
    run = run_pipeline("--input", str(tickets), "--endpoints", main_down, *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 50 and summary["dead_lettered"] == 0, summary
    assert summary["endpoints"]["spare"]["succeeded"] == 50
