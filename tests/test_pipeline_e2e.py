"""End to end: ``python -m pipeline`` in a subprocess against the simulator, real openai client."""

from __future__ import annotations

import glob
import json

import pytest

from tests.conftest import EXAMPLES, write_jsonl

RESULT_KEYS = {"id", "response", "model", "finish_reason", "prompt_tokens", "completion_tokens",
               "latency_ms", "attempts", "started_at", "finished_at", "ticket"}
DEAD_LETTER_KEYS = {"id", "stage", "reason", "error_class", "http_status", "message", "attempts",
                    "first_attempt_at", "last_attempt_at"}

FAST_RETRIES = ("--initial_backoff_secs", "0.01", "--max_backoff_secs", "0.05")


def _ticket(i, body=None, **extra):
    return {"id": f"T-{i:05d}", "subject": f"Subject {i}", "body": body or f"Ticket body {i}.",
            **extra}


def test_sample_jsonl_with_simulate(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 300 and summary["succeeded"] == 300
    assert summary["dead_lettered"] == 0 and summary["ledger_balanced"] is True
    for key in ("read", "succeeded", "dead_lettered", "duplicates", "requests", "retries",
                "rate_limited", "prompt_tokens", "completion_tokens", "wall_secs",
                "tickets_per_sec"):
        assert key in summary
    # The summary agrees with what the provider itself counted.
    assert summary["requests"] == summary["simulator"]["requests"] == 300
    assert summary["prompt_tokens"] == summary["simulator"]["prompt_tokens"]
    assert summary["completion_tokens"] == summary["simulator"]["completion_tokens"]
    results = run.results()
    assert len(results) == 300 and len({r["id"] for r in results}) == 300
    assert RESULT_KEYS <= set(results[0])
    by_id = {r["id"]: r for r in results}
    first = by_id["T-000001"]
    assert first["ticket"]["customer"]["name"]  # input fields are carried through
    assert "T-000001" in first["response"] or first["ticket"]["subject"] in first["response"]
    assert "ledger" in run.stdout and "balanced" in run.stdout


def test_parquet_in_parquet_out(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.parquet"), "--simulate",
                       "--output_format", "parquet", "--key_field", "priority")
    assert run.returncode == 0, run.stderr
    assert glob.glob(str(run.output / "results-*.parquet"))
    results = run.results()
    assert len(results) == 300
    assert RESULT_KEYS <= set(results[0])
    ticket = json.loads(results[0]["ticket"])  # the input record, as a JSON column
    assert ticket["id"] == results[0]["id"]
    assert run.summary()["ledger_balanced"] is True


def test_bad_input_becomes_dead_letters_with_reasons(run_pipeline, tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(_ticket(1)),
        "{not json",
        "[1, 2, 3]",
        json.dumps({"subject": "no id", "body": "text"}),
        json.dumps({"id": "T-x2", "subject": "no body"}),
        json.dumps({"id": "T-x3", "body": "   "}),
        json.dumps({"id": "T-x4", "body": "x" * 500}),
        json.dumps({"id": "T-x5", "body": 42}),
        json.dumps({"id": ["a"], "body": "list id"}),
        json.dumps(_ticket(1, body="duplicate of the first")),
        "",
        "   ",
        json.dumps({"id": 77, "body": "numeric ids are fine"}),
    ]
    write_jsonl(path, lines)
    with open(path, "ab") as handle:
        handle.write(b'{"id": "T-bin", "body": "\xff\xfe bad bytes"}\n')
    run = run_pipeline("--input", str(path), "--simulate", "--max_input_chars", "100")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 12  # blank lines are not records
    assert summary["succeeded"] == 2 and summary["dead_lettered"] == 10
    assert summary["duplicates"] == 1 and summary["parse_errors"] == 9
    assert summary["ledger_balanced"] is True
    dead = run.dead_letters()
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == sorted(["invalid_json", "not_an_object", "missing_id", "missing_text",
                              "empty_text", "text_too_long", "invalid_text", "invalid_id",
                              "duplicate_id", "invalid_encoding"])
    for record in dead:
        assert DEAD_LETTER_KEYS <= set(record)
        assert record["stage"] == "parse" and record["source"].endswith("bad.jsonl")
        assert record["line"] >= 1
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason["invalid_json"]["raw"] == "{not json"
    assert by_reason["invalid_json"]["line"] == 2
    assert by_reason["duplicate_id"]["ticket"]["body"] == "duplicate of the first"
    assert by_reason["duplicate_id"]["line"] == 10  # the later line is the duplicate
    assert {r["id"] for r in run.results()} == {"T-00001", "77"}


def test_faults_every_ticket_accounted_for(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory(seed=3, p_503=0.1, p_500=0.05, p_502=0.05, p_reset=0.05,
                            p_malformed=0.05, p_hang=0.02, hang_secs=3, rpm=3000, burst_secs=1)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(200)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_retries", "8",
                       "--request_timeout_secs", "1", *FAST_RETRIES, "--max_concurrency", "16")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == 200
    assert summary["succeeded"] + summary["dead_lettered"] == 200
    assert summary["ledger_balanced"] is True
    assert summary["retries"] > 0 and summary["server_errors"] > 0
    stats = sim.stats()
    # Every request the pipeline counted reached the provider, and every answer was kept once.
    assert summary["requests"] == stats["requests"]
    assert summary["succeeded"] == stats["successful_completions"]
    ids = [r["id"] for r in run.results()] + [d["id"] for d in run.dead_letters()]
    assert sorted(ids) == sorted(f"T-{i:05d}" for i in range(200))


def test_fail_n_times_gives_exact_retry_counts_and_400_is_not_retried(
        run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory(context_window=400)
    path = write_jsonl(tmp_path / "t.jsonl", [
        _ticket(1, body="please help FAIL_N_TIMES:2"),
        _ticket(2, body="this one never works FAIL_N_TIMES:10"),
        _ticket(3, body="CONTENT_FILTER this"),
        _ticket(4, body="long " * 400),
        _ticket(5),
    ])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_retries", "3",
                       *FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    results = {r["id"]: r for r in run.results()}
    dead = run.dead_letters_by_id()
    assert results["T-00001"]["attempts"] == 3
    assert results["T-00005"]["attempts"] == 1
    assert dead["T-00002"]["reason"] == "retries_exhausted"
    assert dead["T-00002"]["attempts"] == 4 and dead["T-00002"]["http_status"] == 503
    assert dead["T-00003"]["reason"] == "content_filter" and dead["T-00003"]["attempts"] == 1
    assert dead["T-00004"]["reason"] == "context_length" and dead["T-00004"]["attempts"] == 1
    assert dead["T-00004"]["http_status"] == 400 and dead["T-00004"]["stage"] == "llm"
    assert dead["T-00004"]["ticket"]["id"] == "T-00004"
    summary = run.summary()
    assert summary["retries"] == 2 + 3
    assert summary["requests"] == 3 + 4 + 1 + 1 + 1 == sim.stats()["requests"]


def test_rate_seen_by_provider_stays_within_limit(run_pipeline, simulator_factory, tmp_path):
    rpm = 1200  # 20 requests per second
    sim = simulator_factory(rpm=rpm, burst_secs=1)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(120)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url,
                       "--requests_per_minute", str(rpm), "--max_concurrency", "64")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 120
    stats = sim.stats()
    # The provider enforces a rolling one-second window (burst_secs=1) at exactly our rate, so
    # scheduling jitter (a late wake-up is made up for by the next send) may bunch an arrival or
    # two into one window on a loaded machine: those few 429s are retried; nearly all must pass.
    assert stats["by_status"].get("429", 0) <= 0.05 * stats["requests"]
    assert max(b["ok"] for b in stats["per_second"]) <= rpm / 60 + 1
    assert summary["throttled_secs"] > 0  # the limiter, not the provider, held us back


def test_rate_limited_by_provider_recovers(run_pipeline, simulator_factory, tmp_path):
    # The pipeline is told nothing of the limit: 429s with retry-after must still finish the job.
    sim = simulator_factory(rpm=1200, burst_secs=1)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(60)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_retries", "10",
                       "--max_concurrency", "32")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 60
    assert summary["rate_limited"] == sim.stats()["by_status"].get("429", 0) > 0


def test_api_key_never_appears_anywhere(run_pipeline, simulator_factory, tmp_path):
    secret = "sk-test-SuperSecretValue123456"
    sim = simulator_factory(api_key=secret, p_503=0.2, seed=5)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(30)] + ["{bad"])
    good = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--log_level", "DEBUG",
                        *FAST_RETRIES, env={"OPENAI_API_KEY": secret})
    assert good.returncode == 0, good.stderr
    assert good.summary()["succeeded"] == 30
    # --skip_preflight: the run's first requests find the wrong key (not the preflight); they are
    # all refused, so the job stops with one line naming the key's variable.
    wrong = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--log_level", "DEBUG",
                         "--skip_preflight", env={"OPENAI_API_KEY": secret + "-wrong"})
    assert wrong.returncode == 2, wrong.stderr
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("ticketflow: error:")]
    assert len(errors) == 1 and "rejected the API key (HTTP 401" in errors[0]
    assert "set OPENAI_API_KEY" in errors[0] and "Traceback" not in wrong.stderr
    assert sim.stats()["by_status"]["401"] == 3
    for run in (good, wrong):
        blobs = [run.stdout, run.stderr]
        for file in run.output.rglob("*"):
            if file.is_file():
                blobs.append(file.read_bytes().decode("utf-8", errors="replace"))
        for blob in blobs:
            assert secret not in blob
            assert "SuperSecretValue" not in blob


def test_no_key_fails_before_any_work(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0] and "--simulate" in lines[0]
    assert not run.output.exists()


def test_input_matching_nothing_fails_clearly(run_pipeline, tmp_path):
    run = run_pipeline("--input", str(tmp_path / "nothing-*.jsonl"), "--simulate")
    assert run.returncode == 2
    assert "matches no file" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_earlier_output_is_not_overwritten_silently(run_pipeline, tmp_path):
    out = tmp_path / "same"
    first = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate", output=out)
    assert first.returncode == 0, first.stderr
    second = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate", output=out)
    assert second.returncode == 2 and "--overwrite" in second.stderr
    third = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate", "--overwrite",
                         output=out)
    assert third.returncode == 0, third.stderr
    assert len(third.results()) == 300


@pytest.mark.parametrize("flags,needle", [
    (("--batch_size", "0"), "--batch_size"),
    (("--tokens_per_minute", "100", "--max_tokens", "256"), "--tokens_per_minute"),
    (("--requests_per_minute", "60", "--rate_slice_secs", "90"), "--rate_slice_secs"),
    (("--system_prompt", "@/nonexistent/prompt.txt"), "--system_prompt"),
    (("--simulator_flags", "--no_such_flag"), "--simulator_flags"),
])
def test_bad_flags_give_one_clear_line(run_pipeline, flags, needle):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate", *flags)
    assert run.returncode == 2
    assert needle in run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr
