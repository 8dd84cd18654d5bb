"""The measuring tools of ``benchmarks/``: baselines against the real simulator, the profile split.

Only behaviour is asserted (every request answered, samples attributed to the right area, RSS
read), never a timing.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from benchmarks import aiohttp_baseline, memory, profile, sdk_baseline
from benchmarks.baseline_common import DEFAULT_SYSTEM_PROMPT, messages_of, read_records

RECORDS = [{"id": f"T-{i}", "subject": "Refund" if i % 2 else "", "body": f"Please help {i}."}
           for i in range(12)]


def test_messages_match_the_pipeline():
    from transforms.llm import DEFAULT_SYSTEM_PROMPT as PIPELINE_PROMPT
    from transforms.prompts import PromptRenderer
    from transforms.records import Ticket

    assert DEFAULT_SYSTEM_PROMPT == PIPELINE_PROMPT
    renderer = PromptRenderer(None, DEFAULT_SYSTEM_PROMPT)  # the pipeline's default prompt
    for record in RECORDS[:2]:
        ticket = Ticket(id=record["id"], subject=record["subject"], body=record["body"],
                        fields=record)
        assert messages_of(record, DEFAULT_SYSTEM_PROMPT) == renderer.render(ticket)


@pytest.mark.parametrize("transport,answer,call", [("aiohttp", "raw", "create"),
                                                  ("httpx", "parsed", "create"),
                                                  ("aiohttp", "raw", "post")])
def test_sdk_baseline_answers_every_ticket(simulator_factory, transport, answer, call):
    sim = simulator_factory()
    ok, failed = asyncio.run(sdk_baseline.send_all(
        sim.base_url, RECORDS, 4, DEFAULT_SYSTEM_PROMPT, "gpt-4o-mini", 16, transport, answer,
        call))
    assert (ok, failed) == (len(RECORDS), 0)
    assert sim.stats()["successful_completions"] == len(RECORDS)


def test_sdk_baseline_counts_failures(simulator_factory):
    sim = simulator_factory(p_500=1.0)
    ok, failed = asyncio.run(sdk_baseline.send_all(
        sim.base_url, RECORDS[:3], 2, "", "gpt-4o-mini", 16))
    assert (ok, failed) == (0, 3)


def test_aiohttp_baseline_answers_every_ticket(simulator_factory, tmp_path, capsys):
    sim = simulator_factory()
    tickets = tmp_path / "t.jsonl"
    tickets.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert read_records(str(tickets)) == RECORDS
    code = aiohttp_baseline.main(["--base_url", sim.base_url, "--input", str(tickets),
                                  "--concurrency", "3"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert line["sent"] == line["ok"] == len(RECORDS) and line["failed"] == 0
    assert {"wall_s", "cpu_s"} <= set(line)
    assert sim.stats()["successful_completions"] == len(RECORDS)


def _stack(*frames: str) -> tuple[str, ...]:
    return ("_run_module_as_main (<frozen runpy>:198)",) + frames


def test_profile_attributes_generic_frames_to_their_caller():
    transform = _stack("AsyncCompletions.create (openai/resources/chat/completions/"
                       "completions.py:3414)",
                       "_transform_recursive (openai/_utils/_transform.py:200)",
                       "get_origin (typing.py:2400)")
    assert profile.classify(transform) == "SDK: request build + client plumbing"
    handoff = _stack("_CallModelFn._drain (transforms/llm.py:650)",
                     "wait (concurrent/futures/_base.py:305)", "Condition.wait (threading.py:320)")
    assert profile.classify(handoff) == "DoFn <-> loop handoff"
    parse = _stack("LlmEngine._send (transforms/llm.py:500)",
                   "LegacyAPIResponse.parse (openai/_legacy_response.py:101)",
                   "construct_type (openai/_models.py:620)", "isinstance (<frozen abc>:119)")
    assert profile.classify(parse) == "SDK: response parse (pydantic)"
    imports = _stack("_find_and_load (<frozen importlib._bootstrap>:1176)",
                     "<module> (openai/__init__.py:1)")
    assert profile.classify(imports) == "start-up: imports"
    assert profile.classify(_stack("mystery (somewhere.py:1)")) == profile.OTHER


def test_profile_report_and_flame_graph(tmp_path, capsys):
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        "process 1:\"python\";thread (1): MainThread;main (a.py:1);dumps (json/__init__.py:231) 3\n"
        "process 1:\"python\";thread (1): MainThread;main (a.py:1);"
        "acquire (transforms/limits/limiter.py:150) 1\n")
    stacks = profile.read_collapsed(str(collapsed))
    assert stacks[0] == (("main (a.py:1)", "dumps (json/__init__.py:231)"), 3)
    assert profile.split(stacks) == {"JSON encode/decode": 3, "rate limiter": 1}
    svg = tmp_path / "g.svg"
    assert profile.main(["report", str(collapsed), "--svg", str(svg), "--tickets", "2"]) == 0
    table = capsys.readouterr().out
    assert "| JSON encode/decode | 3 | 75.0 % | 7.500 |" in table
    text = svg.read_text()
    assert text.startswith("<svg") and "dumps (json/__init__.py:231)" in text


def test_memory_reads_the_process_tree():
    by_name = memory.tree_rss_by_name(os.getpid())
    assert sum(by_name.values()) > 10_000  # this Python process alone holds > 10 MB
    cmd = memory.pipeline_cmd("t.jsonl", "out", "http://x/v1", "PrismRunner", "/bin/prism",
                              "budget")
    assert cmd[cmd.index("--runner") + 1] == "PrismRunner"
    assert "--prism_location" in cmd and "--max_cost_usd" in cmd


def test_micro_handoff_measures_both_paths(capsys):
    from benchmarks import micro

    assert micro.main(["--only", "handoff", "--n", "300", "--repeat", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)["handoff"]
    assert figures["threadsafe_us"] > 0 and figures["in_loop_us"] > 0
