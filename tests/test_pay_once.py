"""Pay once: the response store, kill-and-resume, budget cap, replay, pricing and --estimate."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import EXAMPLES, REPO, write_jsonl
from transforms.pricing import Price, PricingError, load_pricing
from transforms.store import ResponseStore, request_key


def _ticket(i):
    return {"id": f"T-{i:05d}", "subject": f"Subject {i}", "body": f"Ticket body number {i}."}


# ---- store and pricing units ---------------------------------------------------------------

def test_request_key_depends_on_what_changes_the_answer():
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    assert request_key(base) == request_key(dict(base))
    assert request_key(base) == request_key({**base, "timeout": 5})  # transport, not answer
    for change in ({"model": "n"}, {"max_tokens": 11}, {"temperature": 0.2},
                   {"messages": [{"role": "user", "content": "hi!"}]}):
        assert request_key({**base, **change}) != request_key(base)


def test_store_hit_miss_and_corrupt_entry(tmp_path):
    store = ResponseStore(str(tmp_path / "store"))
    key = request_key({"model": "m", "messages": []})
    assert store.get(key) is None  # miss
    store.put(key, {"content": "answer", "prompt_tokens": 3})
    assert store.get(key) == {"content": "answer", "prompt_tokens": 3}  # hit
    assert ResponseStore(str(tmp_path / "store")).get(key)["content"] == "answer"  # survives
    with open(store.path(key), "w") as handle:
        handle.write('{"content": "trunc')
    assert store.get(key) is None  # corrupt = miss, never an error
    assert not [p for p in os.listdir(os.path.dirname(store.path(key))) if p.startswith(".tmp")]


def test_pricing_lookup_and_cost(tmp_path):
    pricing = load_pricing(None)
    price, known = pricing.lookup("gpt-4o-mini-2024-07-18")
    assert known and price == pricing.models["gpt-4o-mini"]
    assert pricing.lookup("my-local-llama") == (Price(), False)
    cost = Price(input=1.0, cached_input=0.5, output=2.0).cost(1_000_000, 500_000, 200_000)
    assert cost == pytest.approx(0.8 + 0.1 + 1.0)
    bad = tmp_path / "p.json"
    bad.write_text('{"models": {"x": {"input": "cheap"}}}')
    with pytest.raises(PricingError, match="'x'"):
        load_pricing(str(bad))


# ---- end to end ------------------------------------------------------------------------------

def _all_results(output):
    records = []
    for path in sorted(glob.glob(str(output / "results-*.jsonl"))):
        with open(path) as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def test_sigkill_then_resume_pays_each_ticket_once(simulator_factory, run_pipeline, tmp_path):
    # A constant latency with 4 in flight makes answers arrive in waves, 4 at a time every 0.5 s,
    # so there is a clearly quiet moment after each wave in which to kill.
    sim = simulator_factory(latency_median_ms=500, latency_p99_ms=500, seed=2)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(150)])
    out, store = tmp_path / "out", tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    cmd = [sys.executable, "-m", "pipeline", "--input", str(path), "--output", str(out),
           "--base_url", sim.base_url, "--response_store", str(store), "--max_concurrency", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Kill in a quiet moment (no answer for 250 ms, half the latency) once some tickets are
    # paid, so every answer the provider delivered has reached the store (a kill in the
    # milliseconds between an answer's arrival and its storing would pay that one again: no
    # store can close that window); the answers still being generated are abandoned by the
    # provider when the client dies.
    last, changed = -1, time.monotonic()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done = sim.stats()["successful_completions"]
        now = time.monotonic()
        if done != last:
            last, changed = done, now
        elif done >= 40 and now - changed > 0.25:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    paid_before = sim.stats()["successful_completions"]
    assert 40 <= paid_before < 150
    assert not glob.glob(str(out / "results-*"))  # Beam finalizes shards only at the end

    resumed = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--response_store",
                           str(store), "--resume", "--max_concurrency", "8", output=out)
    assert resumed.returncode == 0, resumed.stderr
    summary = resumed.summary()
    assert summary["cache_hits"] == paid_before  # everything paid before comes from the store
    ids = [r["id"] for r in _all_results(out)]
    assert sorted(ids) == sorted(f"T-{i:05d}" for i in range(150))  # each id once
    assert sim.stats()["successful_completions"] == 150  # no ticket paid twice

    # A second resume finds every id done and sends nothing.
    again = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--response_store",
                         str(store), "--resume", output=out)
    assert again.returncode == 0, again.stderr
    assert again.summary()["already_done"] == 150 and again.summary()["requests"] == 0
    assert len(_all_results(out)) == 150
    assert sim.stats()["successful_completions"] == 150


def test_budget_cap_then_replay_finishes_the_job(simulator_factory, run_pipeline, tmp_path):
    sim = simulator_factory()
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(60)])
    out = tmp_path / "out"
    # gpt-4o-mini: one ticket costs at most ~(40 prompt * 0.15 + 100 out * 0.6) / 1e6 ≈ $0.000066
    budget = 0.0012
    capped = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_tokens", "100",
                          "--max_cost_usd", str(budget), "--batch_size", "10",
                          "--max_concurrency", "4", output=out)
    assert capped.returncode == 0, capped.stderr
    summary = capped.summary()
    assert summary["ledger_balanced"] is True
    assert 0 < summary["succeeded"] < 60
    assert summary["cost_usd"] <= budget
    dead = capped.dead_letters()
    assert dead and {d["reason"] for d in dead} == {"budget_exhausted"}
    assert len(dead) == 60 - summary["succeeded"]
    # The cap stopped spending within one batch's worth of the budget.
    per_ticket = summary["cost_usd"] / summary["succeeded"]
    assert budget - summary["cost_usd"] <= 10 * per_ticket * 1.5
    assert sim.stats()["successful_completions"] == summary["succeeded"]

    replay = run_pipeline("--replay", "--resume", "--input", str(out / "dead_letter-*.jsonl"),
                          "--base_url", sim.base_url, "--max_tokens", "100",
                          "--max_cost_usd", "1", output=out)
    assert replay.returncode == 0, replay.stderr
    assert replay.summary()["succeeded"] == len(dead)
    ids = [r["id"] for r in _all_results(out)]
    assert sorted(ids) == sorted(f"T-{i:05d}" for i in range(60))
    assert sim.stats()["successful_completions"] == 60


def test_replay_skips_permanent_failures(simulator_factory, run_pipeline, tmp_path):
    sim = simulator_factory()
    dead_letters = [
        {"id": "a", "stage": "llm", "reason": "retries_exhausted", "ticket": {"id": "a", "body": "x"}},
        {"id": "b", "stage": "llm", "reason": "interrupted", "ticket": {"id": "b", "body": "y"}},
        {"id": "c", "stage": "llm", "reason": "context_length", "ticket": {"id": "c", "body": "z"}},
        {"id": None, "stage": "parse", "reason": "invalid_json", "raw": "{oops"},
        {"id": "e", "body": "not a dead letter"},
    ]
    path = write_jsonl(tmp_path / "dl.jsonl", dead_letters)
    run = run_pipeline("--replay", "--input", str(path), "--base_url", sim.base_url)
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 5 and summary["replay_skipped"] == 2
    assert summary["succeeded"] == 2 and summary["ledger_balanced"] is True
    assert [d["reason"] for d in run.dead_letters()] == ["not_a_dead_letter"]


def test_costs_in_results_and_summary(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate")
    assert run.returncode == 0, run.stderr
    results = run.results()
    price = load_pricing(None).models["gpt-4o-mini"]
    for r in results[:20]:
        assert r["cost_usd"] == pytest.approx(
            price.cost(r["prompt_tokens"], r["completion_tokens"]), rel=1e-6)
    assert run.summary()["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in results), abs=1e-5)


def test_unknown_model_prices_at_zero_with_a_warning(run_pipeline, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(3)])
    run = run_pipeline("--input", str(path), "--simulate", "--model", "my-local-llama")
    assert run.returncode == 0, run.stderr
    assert "no price for model 'my-local-llama'" in run.stderr
    assert run.summary()["cost_usd"] == 0


def test_estimate_is_close_to_a_real_run(run_pipeline):
    est = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--estimate",
                       "--requests_per_minute", "600")
    assert est.returncode == 0, est.stderr
    assert "no request sent" in est.stdout and "tickets          300" in est.stdout
    real = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate")
    summary = real.summary()

    def number(label):
        line = next(l for l in est.stdout.splitlines() if l.strip().startswith(label))
        return int(line.split()[2 if label == "prompt tokens" else 2])

    prompt_estimate = number("prompt tokens")
    output_estimate = int(next(l for l in est.stdout.splitlines()
                               if "output tokens" in l).split()[2])
    assert abs(prompt_estimate - summary["prompt_tokens"]) <= 0.25 * summary["prompt_tokens"]
    assert abs(output_estimate - summary["completion_tokens"]) <= 0.25 * summary["completion_tokens"]
    assert "at least 30 s" in est.stdout  # 300 tickets at 600 rpm


def test_rejected_answers_are_counted_as_spend(simulator_factory, run_pipeline, tmp_path):
    """An invalid structured answer was paid for: its cost is in the dead letter and the total."""
    sim = simulator_factory()
    path = write_jsonl(tmp_path / "t.jsonl", [
        _ticket(1), {"id": "T-bad", "subject": "x", "body": "INVALID_OUTPUT_N_TIMES:2 help"}])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url,
                       "--response_schema", str(EXAMPLES / "triage_schema.json"))
    assert run.returncode == 0, run.stderr
    dead = run.dead_letters_by_id()["T-bad"]
    assert dead["reason"] == "invalid_output" and dead["cost_usd"] > 0
    results = run.results()
    total = sum(r["cost_usd"] for r in results) + dead["cost_usd"]
    assert run.summary()["cost_usd"] == pytest.approx(total, abs=2e-6)
