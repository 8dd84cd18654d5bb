"""Operator experience: live progress, the run report, graceful stop and preflight errors.

End-to-end tests run ``python -m pipeline`` in a subprocess (under a pseudo-terminal for the
progress bar) against the simulator; the building blocks (percentiles from buckets, live
counters, the signal handling, the report's HTML) are tested directly.
"""

from __future__ import annotations

import html.parser
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import EXAMPLES, REPO, write_jsonl

FAST_RETRIES = ("--initial_backoff_secs", "0.01", "--max_backoff_secs", "0.05")


def _ticket(i, body=None):
    return {"id": f"T-{i:05d}", "subject": f"Subject {i}", "body": body or f"Ticket body {i}."}


def _env():
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


# -- live progress ----------------------------------------------------------------------------

def _run_in_pty(args, timeout=120.0) -> tuple:
    """Runs ``python -m pipeline ARGS`` with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=_env(),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return proc.returncode, out.decode("utf-8", errors="replace")


@pytest.mark.e2e
def test_progress_bar_on_a_terminal(tmp_path):
    code, out = _run_in_pty(["--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                             "--output", str(tmp_path / "out"), "--max_concurrency", "16",
                             "--simulator_flags", "--latency_median_ms 60"])
    assert code == 0, out
    assert "tickets/s" in out
    # tqdm redraws in place with carriage returns, and ends at the pre-counted total.
    bar_frames = [f for f in out.split("\r") if "tickets/s" in f]
    assert len(bar_frames) >= 2
    assert any("300/300" in f and "100%" in f for f in bar_frames)
    assert any("dead 0" in f and "retries 0" in f for f in bar_frames)
    assert "ticketflow summary" in out
    # No plain progress lines when a bar is drawn.
    assert " progress done=" not in out
    # A quiet first screen: one start line naming input, output, model, runner and limits, then
    # the bar; no line over 200 characters before the summary; the configuration is not on it.
    # (The paths shortened to what README's command 1 names: examples/..., out/quickstart.)
    first_screen = out.split("ticketflow summary")[0].replace(str(REPO) + "/", "").replace(
        str(tmp_path / "out"), "out/quickstart")
    lines = [line for line in re.split(r"[\r\n]+", first_screen) if line.strip()]
    assert max(len(line) for line in lines) <= 200, lines
    logged = [line for line in lines if " INFO " in line or " DEBUG " in line]
    assert len(logged) == 1 and " start " in logged[0], logged
    for field in ("input=", "output=", "model=", "runner=", "rpm=", "tpm=", "concurrency="):
        assert field in logged[0]
    assert "config=" not in out


def test_plain_progress_lines_without_a_terminal(run_pipeline):
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       "--progress_interval_secs", "0.3", "--max_concurrency", "16",
                       "--simulator_flags", "--latency_median_ms 60")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if " progress " in line]
    assert len(lines) >= 2, run.stderr
    last = dict(re.findall(r"(\w+)=(\S+)", lines[-1]))
    assert last["total"] == "300"
    assert {"done", "tickets_per_sec", "eta_secs", "tokens", "retries", "rate_limited",
            "dead_letters"} <= set(last)
    assert "\r" not in run.stderr and "tickets/s" not in run.stderr
    quiet = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate", "--quiet",
                         "--progress_interval_secs", "0.3", "--max_concurrency", "16",
                         "--simulator_flags", "--latency_median_ms 60")
    assert quiet.returncode == 0, quiet.stderr
    assert " progress " not in quiet.stderr


def test_no_live_count_on_multi_processing_says_so_once(run_pipeline, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(20)])
    run = run_pipeline("--input", str(path), "--simulate", "--direct_num_workers", "2",
                       "--direct_running_mode", "multi_processing",
                       "--progress_interval_secs", "0.5")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("progress_unavailable") == 1
    assert "progress done=" not in run.stderr
    assert run.summary()["succeeded"] == 20


def test_json_logs_are_one_object_per_line_without_secrets(run_pipeline, simulator_factory,
                                                            tmp_path):
    secret = "sk-test-JsonLogSecret987654"
    sim = simulator_factory(api_key=secret, p_503=0.3, seed=2)
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(20)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--log_format", "json",
                       "--log_level", "DEBUG", *FAST_RETRIES, "--progress_interval_secs", "0.2",
                       env={"OPENAI_API_KEY": secret})
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    events = [r["event"] for r in records]
    for needed in ("start", "config", "summary"):
        assert events.count(needed) == 1, events
    assert "retry" in events  # DEBUG: one line per retry
    first_errors = [r for r in records if r["event"] == "first_error"]
    assert [r["error_class"] for r in first_errors] == ["ServerError"]  # once, not per 503
    assert first_errors[0]["level"] == "WARNING"
    config = next(r for r in records if r["event"] == "config")["config"]
    assert config["llm"]["api_key_env"] == "OPENAI_API_KEY"
    assert secret not in run.stderr


# -- report and summary -----------------------------------------------------------------------

class _ReportParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.plots = {}
        self._plot = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "xlink:href", "data"):
            if name in attrs:
                self.external.append((tag, attrs[name]))
        if tag in ("script", "link", "img", "iframe"):
            self.external.append((tag, attrs))
        if tag == "figure" and "plot" in (attrs.get("class") or ""):
            self._plot = attrs["data-plot"]
            self.plots[self._plot] = []
        elif self._plot and "data" in (attrs.get("class") or "").split():
            self.plots[self._plot].append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "figure":
            self._plot = None


def test_report_and_summary_percentiles_and_reasons(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory(latency_median_ms=40, latency_p99_ms=200, seed=4, p_503=0.05)
    records = [_ticket(i) for i in range(80)]
    records.append(_ticket(900, body="CONTENT_FILTER please"))
    records.append("{not json")
    path = write_jsonl(tmp_path / "t.jsonl", records)
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, *FAST_RETRIES,
                       "--max_concurrency", "8")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["ledger_balanced"] is True
    p50, p90, p99 = (summary[f"latency_ms_p{q}"] for q in (50, 90, 99))
    assert 0 < p50 <= p90 <= p99 <= summary["latency_ms_max"] * 1.0001
    # The bucketed p50 is close to the exact median of the written latencies (buckets are ~26%).
    latencies = sorted(r["latency_ms"] for r in run.results())
    exact = latencies[len(latencies) // 2]
    assert exact / 1.35 <= p50 <= exact * 1.35
    reasons = {}
    for dead in run.dead_letters():
        reasons[dead["reason"]] = reasons.get(dead["reason"], 0) + 1
    assert summary["dead_letter_reasons"] == reasons
    assert {"content_filter", "invalid_json"} <= set(reasons)

    text = (run.output / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    parser = _ReportParser()
    parser.feed(text)
    assert not parser.external
    assert set(parser.plots) == {"throughput", "latency", "outcomes", "tokens", "requests_rate",
                                 "tokens_rate", "rate_limited_rate", "throttled_rate"}
    for name, elements in parser.plots.items():
        assert elements, f"plot {name} has no data"
        for tag, attrs in elements:
            if tag == "polyline":
                points = attrs["points"].split()
                assert len(points) >= 1 and all("," in p for p in points)
            else:
                assert tag == "rect"
                assert float(attrs["height"]) > 0
    assert any(float(a["width"]) > 0 for _, a in parser.plots["outcomes"])
    assert "dead letter: content_filter" in text
    assert f"p50 {p50:g}" in text or f"p50 {p50:,.1f}" in text


# -- graceful stop ----------------------------------------------------------------------------

def test_sigint_mid_run_leaves_a_balanced_ledger_then_replay_answers_the_rest(
        run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory(latency_median_ms=300, seed=1)
    n = 80
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(n)])
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--input", str(path), "--output", str(out),
         "--base_url", sim.base_url, "--max_concurrency", "4", "--progress_interval_secs", "0.2"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until some tickets are answered, then interrupt.
    done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = re.search(r" progress done=(\d+)", line)
        if match and int(match.group(1)) >= 8:
            done = int(match.group(1))
            break
    assert done >= 8, "the run never made progress"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopping signal=SIGINT" in stderr
    assert "interrupted" in stdout  # the summary says so

    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT"
    assert summary["ledger_balanced"] is True
    assert summary["read"] == n
    assert done <= summary["succeeded"] < n
    assert summary["dead_letter_reasons"] == {"interrupted": n - summary["succeeded"]}
    dead = [json.loads(line) for f in out.glob("dead_letter-*.jsonl") for line in open(f)]
    results = [json.loads(line) for f in out.glob("results-*.jsonl") for line in open(f)]
    assert all(d["reason"] == "interrupted" and d["stage"] == "llm" for d in dead)
    assert sorted([r["id"] for r in results] + [d["id"] for d in dead]) == sorted(
        f"T-{i:05d}" for i in range(n))
    # Nothing was sent for the unsent ones (in-flight requests were allowed to finish).
    assert summary["requests"] == summary["succeeded"]
    assert (out / "report.html").exists()

    # Replay: the dead letters' tickets are the input of a second run, which answers them all.
    replay = write_jsonl(tmp_path / "replay.jsonl", [d["ticket"] for d in dead])
    again = run_pipeline("--input", str(replay), "--base_url", sim.base_url,
                         "--max_concurrency", "32")
    assert again.returncode == 0, again.stderr
    assert again.summary()["succeeded"] == len(dead) and again.summary()["dead_lettered"] == 0
    answered = {r["id"] for r in results} | {r["id"] for r in again.results()}
    assert answered == {f"T-{i:05d}" for i in range(n)}


def test_graceful_stop_handler_then_second_signal_exits_at_once():
    from pipeline.watch import GracefulStop
    from transforms.llm.stop import StopSignal

    exits, stopped, heard = [], [], []
    stop_signal = StopSignal()
    stop_signal.subscribe(heard.append)
    with GracefulStop(drain_secs=0.05, on_stop=lambda: stopped.append(1),
                      exit_now=exits.append, signal_=stop_signal) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop_signal.stopping() and stop.signal_name == "SIGTERM"
        time.sleep(0.3)
        assert stopped == [1]
        assert stop_signal.aborting()  # --drain_secs ran out
        assert heard == ["stop", "abort"]
        assert exits == []
        signal.raise_signal(signal.SIGINT)
        assert exits == [130]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_engine_turns_unsent_and_waiting_tickets_into_interrupted(simulator_factory):
    from transforms.llm import LlmConfig, StopSignal
    from transforms.llm.engine import Engine
    from transforms.records import DeadLetter, Ticket
    from transforms.retry import RetryPolicy

    sim = simulator_factory(p_503=1.0)  # every attempt fails: tickets wait for their retries
    config = LlmConfig(base_url=sim.base_url, public_api_key="test", max_concurrency=2,
                       retry=RetryPolicy(max_retries=50, initial_backoff_secs=5,
                                         max_backoff_secs=5))
    stop = StopSignal()
    engine = Engine(config, "test", stop)
    answerer = engine.answerer(config)
    try:
        tickets = [Ticket(id=str(i), subject="", body="hello", fields={"id": i}) for i in range(4)]
        futures = [engine.submit(answerer.handle(t)) for t in tickets]
        time.sleep(0.5)  # first attempts failed; now sleeping before the retry
        started = time.monotonic()
        stop.request_stop()
        records = [f.result(timeout=5) for f in futures]
        assert time.monotonic() - started < 2  # the backoff sleep was cut short
        assert all(isinstance(r, DeadLetter) and r.reason == "interrupted" for r in records)
        assert all(r.ticket is not None for r in records)  # replayable
        late = engine.submit(answerer.handle(
            Ticket(id="late", subject="", body="x", fields={}))).result(5)
        assert late.reason == "interrupted" and late.stats.attempts == 0
    finally:
        engine.close()
    assert engine.closed


# -- preflight --------------------------------------------------------------------------------

def _one_line_error(run) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("ticketflow: error:")]
    assert len(errors) == 1, run.stderr
    return errors[0]


def test_preflight_unreachable_endpoint(run_pipeline):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: connections are refused.
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"),
                       "--base_url", f"http://127.0.0.1:{port}/v1")
    line = _one_line_error(run)
    assert "cannot reach the endpoint" in line and f":{port}" in line and "--base_url" in line
    assert not run.output.exists()


def test_preflight_wrong_key(run_pipeline, simulator_factory):
    secret = "sk-test-PreflightSecret123456"
    sim = simulator_factory(api_key=secret)
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--base_url", sim.base_url,
                       env={"OPENAI_API_KEY": secret + "-wrong"})
    line = _one_line_error(run)
    assert "rejected the API key (HTTP 401)" in line and "OPENAI_API_KEY" in line
    assert "PreflightSecret" not in run.stderr + run.stdout
    assert sim.stats()["requests"] == 0  # no ticket was sent
    assert not run.output.exists()


def test_preflight_unwritable_output(run_pipeline, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--simulate",
                       output=blocker / "out")
    line = _one_line_error(run)
    assert "--output" in line and "not writable" in line


def test_preflight_no_input(run_pipeline, tmp_path):
    run = run_pipeline("--input", str(tmp_path / "missing.jsonl"), "--simulate")
    line = _one_line_error(run)
    assert "--input" in line and "matches no file" in line
    assert not run.output.exists()


def test_preflight_output_probe_leaves_nothing(run_pipeline, tmp_path):
    # The endpoint check fails after the output probe: the probe's directories are gone again.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "deep" / "er" / "out"
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"),
                       "--base_url", f"http://127.0.0.1:{port}/v1", output=out)
    _one_line_error(run)
    assert not (tmp_path / "deep").exists()


# -- a wrong base URL or model: found before the run, or by its first requests ----------------

NO_PREFLIGHT = {"preflight": (), "skip_preflight": ("--skip_preflight",)}


def _nothing_written(run) -> None:
    written = [p.name for p in run.output.glob("*")] if run.output.exists() else []
    assert not [n for n in written if not n.startswith("beam-temp-")], written


@pytest.mark.parametrize("mode", NO_PREFLIGHT)
def test_a_wrong_base_path_exits_2_naming_base_url(run_pipeline, simulator_factory, mode):
    sim = simulator_factory()
    wrong = sim.base_url.replace("/v1", "/nope/v1")
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--base_url", wrong,
                       *NO_PREFLIGHT[mode])
    line = _one_line_error(run)
    assert "has no chat completions route" in line and "check --base_url" in line
    assert "Invalid URL (POST /nope/v1/chat/completions)" in line
    stats = sim.stats()
    # Preflight: GET /models and one POST with no messages; the run: its first 3 requests.
    assert stats["requests"] == 0 and stats["unknown_urls"] == (2 if mode == "preflight" else 3)
    _nothing_written(run)


@pytest.mark.parametrize("mode", NO_PREFLIGHT)
def test_a_wrong_model_exits_2_naming_model(run_pipeline, simulator_factory, mode):
    sim = simulator_factory(models="gpt-4o-mini,gpt-4o")
    run = run_pipeline("--input", str(EXAMPLES / "tickets.jsonl"), "--base_url", sim.base_url,
                       "--model", "gpt-4o-mimi", *NO_PREFLIGHT[mode])
    line = _one_line_error(run)
    assert "does not serve the model 'gpt-4o-mimi'" in line and line.endswith("check --model.")
    stats = sim.stats()
    if mode == "preflight":  # GET /models and GET /models/{model}: no completion request
        assert "it lists gpt-4o-mini, gpt-4o" in line and stats["requests"] == 0
    else:
        assert stats["by_status"] == {"404": 3}
    _nothing_written(run)


def test_a_tickets_own_404_among_answers_stays_a_dead_letter(run_pipeline, simulator_factory,
                                                             tmp_path):
    sim = simulator_factory()
    tickets = [_ticket(i) for i in range(24)] + [_ticket(24, "Refers to NOT_FOUND.")]
    path = write_jsonl(tmp_path / "t.jsonl", tickets)
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_concurrency", "4")
    assert run.returncode == 0, run.stderr
    assert [(d["id"], d["reason"], d["http_status"]) for d in run.dead_letters()] == [
        ("T-00024", "not_found", 404)]
    assert run.summary()["succeeded"] == 24 and sim.stats()["by_status"]["404"] == 1


# -- building blocks --------------------------------------------------------------------------

def test_latency_percentiles_from_buckets():
    from transforms import metrics

    counts = {}
    values = list(range(1, 1001))  # 1..1000 ms, uniform
    for v in values:
        name = metrics.latency_bucket(v)
        counts[name] = counts.get(name, 0) + 1
    got = metrics.latency_percentiles(counts, (0.5, 0.9, 0.99), max_ms=1000)
    for q, exact in ((0.5, 500), (0.9, 900), (0.99, 990)):
        assert abs(got[q] - exact) <= 0.13 * exact
    assert metrics.latency_percentiles({}, (0.5,)) == {0.5: None}
    assert metrics.latency_bucket(10 ** 9) == "latency_bucket_le_infms"
    assert metrics.dead_letter_reasons({"dead_letter_interrupted": 3, "dead_lettered": 3,
                                        "dead_letter_x": 0}) == {"interrupted": 3}


def test_progress_stats_per_second_and_reasons():
    from pipeline.progress import ProgressStats
    from transforms.records import CallStats, DeadLetter, Result

    stats = ProgressStats(wall=lambda: 1000.5)
    result = Result(id="1", response="r", model="m", finish_reason="stop", started_at=998.0,
                    finished_at=999.2, ticket={},
                    stats=CallStats(attempts=1, latency_ms=5, prompt_tokens=1,
                                    completion_tokens=1))
    stats.finished(result)
    stats.finished(DeadLetter(id="2", stage="parse", reason="invalid_json", error_class="X",
                              message="m"))
    stats.add("succeeded")
    snap = stats.snapshot()
    assert snap["per_second"] == {999: (1, 0), 1000: (0, 1)}
    assert snap["dead_letter_reasons"] == {"invalid_json": 1}
    assert snap["succeeded"] == 1


def test_report_render_is_self_contained_with_empty_data():
    from pipeline.report import page as report

    page = report.render({"output": "gs://bucket/out", "ledger_balanced": True}, [], [])
    assert "no completions were timed" in page and "no successful request" in page
    assert "<script" not in page and "http" not in page.replace("gs://", "")
