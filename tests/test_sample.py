"""``--sample N``: a deterministic sample, a projection of the full job, and the resume after it."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import projection
from tests.conftest import EXAMPLES
from transforms.pricing import Price
from transforms.records import Ticket
from transforms.sample import SampleTickets, sample_key

SAMPLE = EXAMPLES / "tickets.jsonl"
RPM = ("--requests_per_minute", "600")


def _ids(run) -> list:
    return sorted(r["id"] for r in run.results())


def _expected_sample(n: int) -> list:
    with open(SAMPLE, encoding="utf-8") as handle:
        ids = [json.loads(line)["id"] for line in handle if line.strip()]
    return sorted(sorted(ids, key=sample_key)[:n])


def test_sample_tickets_keeps_the_smallest_hashes_whatever_the_order():
    tickets = [Ticket(id=f"T-{i}", subject="", body="b", fields={}) for i in range(40)]
    expected = sorted(sorted((t.id for t in tickets), key=sample_key)[:7])
    for order in (tickets, tickets[::-1]):
        with TestPipeline(runner="FnApiRunner") as p:
            kept = p | beam.Create(order) | SampleTickets(7)
            assert_that(kept | beam.Map(lambda t: t.id), equal_to(expected))
    # Pinned: the sampling order must not change between releases (the same sample every run).
    assert sample_key("T-000001")[0].hex() == "bdf201e52b0e26d5"
    with pytest.raises(ValueError):
        SampleTickets(0)


def test_projection_arithmetic():
    summary = {"read": 1010, "succeeded": 95, "dead_lettered": 15, "parse_errors": 8,
               "duplicates": 2, "not_sampled": 900, "requests": 120, "prompt_tokens": 12000,
               "completion_tokens": 6000, "latency_ms_mean": 500.0, "wall_secs": 15.0,
               "dead_letter_reasons": {"content_filter": 5, "invalid_json": 8,
                                       "duplicate_id": 2}}
    settings = projection.Settings(requests_per_minute=600, tokens_per_minute=0, max_tokens=100,
                                   max_concurrency=4, worker_processes=1,
                                   price=Price(input=1, output=2),
                                   batch_price=Price(input=0.5, output=1))
    costs = [0.001] * 50 + [0.003] * 50
    p = projection.project(summary, costs, settings)
    assert p["sample_size"] == 100 and p["tickets"] == 1000
    assert p["cost_usd"] == pytest.approx(2.0)
    low, high = p["cost_usd_ci95"]
    assert low < 2.0 < high and high - low < 0.5
    assert p["batch_cost_usd"] == pytest.approx(1.0)
    # 1000 tickets x 1.2 requests = 1200 requests: 120 s at 600/min; concurrency 4 x 0.5 s:
    # 150 s. Start-up: the sample's 15 s minus its own bound (120 x 0.5 / 4 = 15 s) = 0.
    assert p["bound"] == projection.BOUND_CONCURRENCY
    assert p["bounds_secs"] == {projection.BOUND_CONCURRENCY: 150.0, projection.BOUND_RPM: 120.0}
    assert p["wall_secs"] == 150.0
    assert p["dead_letter_rate"] == {"content_filter": 0.05, "invalid_json": round(8 / 1010, 4),
                                     "duplicate_id": round(2 / 1010, 4)}


@pytest.mark.slow
def test_sample_projects_the_full_run_and_resume_finishes_it(run_pipeline, simulator_factory,
                                                             tmp_path):
    sim = simulator_factory()
    sampled = run_pipeline("--input", str(SAMPLE), "--base_url", sim.base_url, "--sample", "50",
                           *RPM, output=tmp_path / "sampled")
    assert sampled.returncode == 0, sampled.stderr
    summary = sampled.summary()
    assert summary["read"] == 300 and summary["succeeded"] == 50
    assert summary["not_sampled"] == 250 and summary["ledger_balanced"] is True
    assert summary["sample"] == 50 and "SAMPLE" in sampled.stdout
    assert sim.stats()["requests"] == 50
    assert _ids(sampled) == _expected_sample(50)
    p = summary["projection"]
    assert p["tickets"] == 300 and p["bound"] == projection.BOUND_RPM
    report = (sampled.output / "report.html").read_text()
    assert "Projection of the full job" in report and "a SAMPLE of 50" in report

    # The real full run, to hold the projection against.
    full = run_pipeline("--input", str(SAMPLE), "--simulate", *RPM, output=tmp_path / "full")
    assert full.returncode == 0, full.stderr
    real = full.summary()
    assert abs(p["cost_usd"] - real["cost_usd"]) <= 0.15 * real["cost_usd"]
    assert abs(p["wall_secs"] - real["wall_secs"]) <= 0.25 * real["wall_secs"]

    # Finishing the job: the other 250, and no request for the 50 already answered.
    sim.reset()
    rest = run_pipeline("--input", str(SAMPLE), "--base_url", sim.base_url, "--resume",
                        "--requests_per_minute", "3000", output=tmp_path / "sampled")
    assert rest.returncode == 0, rest.stderr
    assert rest.summary()["succeeded"] == 250 and rest.summary()["already_done"] == 50
    assert sim.stats()["requests"] == 250
    ids = []
    for path in glob.glob(str(tmp_path / "sampled" / "results-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            ids.extend(json.loads(line)["id"] for line in handle)
    assert len(ids) == 300 and len(set(ids)) == 300


def test_the_sample_is_the_same_with_two_worker_processes(run_pipeline, tmp_path):
    again = run_pipeline("--input", str(SAMPLE), "--simulate", "--sample", "50",
                         "--runner", "FnApiRunner", "--direct_num_workers", "2",
                         "--direct_running_mode", "multi_processing", *RPM,
                         output=tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert _ids(again) == _expected_sample(50)
