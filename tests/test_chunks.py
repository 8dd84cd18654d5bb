"""Chunked local runs (``pipeline/chunks.py``): the same outputs as one pass, in flat memory.

Unit tests of the boundary finder, the id-hash sets and the counter merge; end-to-end runs of
``python -m pipeline`` against the simulator comparing a chunked run with one pass over the same
input (duplicates inside and across chunks, invalid and blank lines, two files, ``--resume``),
and a stop in the middle of a chunked run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import chunks as chunks_lib
from pipeline import config as config_lib
from pipeline.options import TicketflowOptions
from tests.conftest import REPO, write_jsonl
from transforms import idset
from transforms.read import Piece, iter_file, iter_piece

CHUNK = 7


def _records(path):
    return [(r.source, r.line, r.value, r.decode_error) for r in iter_file(str(path))]


def _read_chunks(chunks):
    return [(r.source, r.line, r.value, r.decode_error)
            for chunk in chunks for piece in chunk.pieces for r in iter_piece(piece)]


# -- boundary finder ----------------------------------------------------------------------------

def test_jsonl_chunks_are_consecutive_and_keep_the_line_numbers(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"".join([b'{"id": 1}\n', b"\n", b"  \r\n", b'{"id": 2}\r\n', b"not json\n",
                            b'{"id": "\xff"}\n'] + [b'{"id": %d}\n' % i for i in range(3, 12)]
                           + [b"\n", b'{"id": "last, no newline"}']))
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}"} for i in range(5)] + ["", ""])
    paths = chunks_lib.matched_paths(f"{b},{tmp_path}/a.*")
    assert paths == sorted([str(a), str(b)])  # the duplicate rule's order: by file name
    chunks = list(chunks_lib.plan(paths, "auto", 4))
    assert [c.index for c in chunks] == list(range(1, len(chunks) + 1))
    expected = _records(a) + _records(b)
    assert [c.records for c in chunks] == [4] * (len(expected) // 4) + [len(expected) % 4]
    # Reading the pieces gives every record once, in order, with its file's line number.
    assert _read_chunks(chunks) == expected
    assert any(len(c.pieces) == 2 for c in chunks)  # a chunk spans the end of a and b's start
    assert chunks[0].pieces[0] == Piece(str(a), 0, chunks[0].pieces[0].end, 1)


def test_parquet_chunks_cut_inside_row_groups(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [f"P{i}" for i in range(23)], "body": ["x"] * 23}), path,
                   row_group_size=5)
    chunks = list(chunks_lib.plan([str(path)], "auto", CHUNK))
    assert [c.records for c in chunks] == [7, 7, 7, 2]
    assert [c.pieces[0].first_line for c in chunks] == [1, 8, 15, 22]
    assert _read_chunks(chunks) == _records(path)


def test_one_pass_when_the_input_fits_else_a_small_first_chunk(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "t.jsonl", [{"id": i} for i in range(30)])
    config = dataclasses.replace(_config(), input=str(path))
    assert chunks_lib.start(30, config) is None and chunks_lib.start(0, config) is None
    monkeypatch.setattr(chunks_lib, "FIRST_CHUNK_TICKETS", 4)
    chunks = list(chunks_lib.start(10, config))
    assert [c.records for c in chunks] == [4, 10, 10, 6]
    assert [c.pieces[0].first_line for c in chunks] == [1, 5, 15, 25]
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(b"")
    assert chunks_lib.start(10, dataclasses.replace(config, input=f"{path},{gz}")) is None


def test_compressed_jsonl_is_not_chunked(tmp_path):
    assert chunks_lib.chunkable([str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")],
                                "auto") is None
    assert "compressed" in chunks_lib.chunkable([str(tmp_path / "a.jsonl.gz")], "auto")


def _config(*flags):
    return config_lib.from_options(TicketflowOptions(
        ["--input", "x.jsonl", "--output", "out", "--simulate", *flags]))


@pytest.mark.parametrize("requested,runner,mode,flags,size", [
    (None, "FnApiRunner", None, [], chunks_lib.DEFAULT_CHUNK_TICKETS),
    (CHUNK, "FnApiRunner", "multi_threading", [], CHUNK),
    (0, "FnApiRunner", None, [], 0),
    (CHUNK, "DataflowRunner", None, [], 0),
    (CHUNK, "PrismRunner", None, [], 0),
    (CHUNK, "FnApiRunner", "multi_processing", [], 0),
    (CHUNK, "FnApiRunner", None, ["--api", "batch"], 0),
    (CHUNK, "FnApiRunner", None, ["--sample", "5"], 0),
    (CHUNK, "FnApiRunner", None, ["--replay"], 0),
])
def test_where_chunks_apply(requested, runner, mode, flags, size):
    got, why_not = chunks_lib.chunk_tickets(requested, runner, mode, _config(*flags))
    assert got == size
    assert (why_not is None) == bool(size)


def test_negative_chunk_size_is_a_usage_error():
    with pytest.raises(config_lib.ConfigError, match="local_chunk_tickets"):
        chunks_lib.chunk_tickets(-1, "FnApiRunner", None, _config())


# -- id-hash sets ---------------------------------------------------------------------------------

def test_id_hash_set_union_and_membership(tmp_path):
    first = idset.hash_ids(["a", "b", "b", "c"])
    assert len(first) == 3 and list(first) == sorted(first)
    merged = idset.union(first, idset.hash_ids(["c", "d"]))
    assert len(merged) == 4 and np.all(merged[:-1] < merged[1:])
    assert list(idset.union(idset.IdHashSet().hashes, first)) == list(first)
    path = str(tmp_path / "ids.npy")
    idset.save_hashes(path, merged)
    known = idset.IdHashSet.load(path)
    assert [i in known for i in ("a", "b", "c", "d", "e", "")] == [True] * 4 + [False] * 2
    idset.save_hashes(path, idset.hash_ids([]))
    assert "a" not in idset.IdHashSet.load(path) and len(idset.IdHashSet.load(None)) == 0
    assert idset.id_hash("T-1") == idset.id_hash("T-1") != idset.id_hash("T-2")


def test_known_ids_come_from_results_and_llm_dead_letters_only(tmp_path):
    write_jsonl(tmp_path / "results-old-00000-of-00001.jsonl", [{"id": "done1"}, {"id": 7}])
    write_jsonl(tmp_path / "results-run-c0001-00000-of-00001.jsonl",
                [{"id": "kept1", "response": "r"}, {"id": 'q"é\\', "response": "r"}])
    write_jsonl(tmp_path / "dead_letter-run-c0001-00000-of-00001.jsonl", [
        {"id": "kept2", "stage": "llm", "reason": "interrupted"},
        {"id": "dup", "stage": "parse", "reason": "duplicate_id"},
        {"stage": "llm", "id": "kept3"},  # not our writer's field order: parsed whole
        {"id": None, "stage": "parse", "reason": "invalid_json"}])
    with chunks_lib.KnownIdFiles() as ids:
        assert ids.read_done(str(tmp_path)) == 4  # every results-* (this run's too)
        assert ids.add_kept(str(tmp_path), "results-run-c0001", "dead_letter-run-c0001") == 4
        sets = ids.known.open()
        assert {"done1", "7", "kept1"} == {i for i in ("done1", "7", "kept1", "x")
                                          if i in sets.done}
        assert {i for i in ("kept1", "kept2", "kept3", "dup", "done1", 'q"é\\')
                if i in sets.earlier} == {"kept1", "kept2", "kept3", 'q"é\\'}
        workdir = Path(ids.known.done).parent
    assert not workdir.exists()


def test_merge_counts_sums_counters_and_weighs_means():
    a = {"succeeded": 3, "dead_letter_interrupted": 1, "latency_ms_mean": 10.0,
         "latency_ms_max": 30, "latency_ms_count": 3}
    b = {"succeeded": 1, "latency_ms_mean": 50.0, "latency_ms_max": 50, "latency_ms_count": 1,
         "already_done": 2}
    merged = chunks_lib.merge_counts(chunks_lib.merge_counts({}, a), b)
    assert merged["succeeded"] == 4 and merged["already_done"] == 2
    assert merged["dead_letter_interrupted"] == 1
    assert merged["latency_ms_mean"] == 20.0 and merged["latency_ms_max"] == 50
    assert merged["latency_ms_count"] == 4


def test_run_chunks_hands_on_the_ids_stops_and_fails_loudly(tmp_path, caplog):
    chunks = [chunks_lib.Chunk(i, (Piece("f.jsonl", 0, 1, i),), 10) for i in (1, 2, 3, 4)]
    seen, stop = [], []

    def run_one(chunk):
        seen.append(chunk)
        write_jsonl(tmp_path / f"results-r-c{chunk.index}-00000-of-00001.jsonl",
                    [{"id": f"id{chunk.index}"}])
        stop.extend([True] if chunk.index == 2 else [])
        return {"succeeded": 10, "latency_ms_mean": 5.0, "latency_ms_max": 9,
                "latency_ms_count": 10}

    def basenames(index):
        return f"results-r-c{index}", f"dead_letter-r-c{index}"

    with chunks_lib.KnownIdFiles() as ids:
        outcome = chunks_lib.run_chunks(iter(chunks), run_one, ids, str(tmp_path), basenames,
                                        stopped=lambda: bool(stop))
        assert seen[0].known.earlier is None and "id1" in seen[1].known.open().earlier
    assert (outcome.chunks, outcome.not_read, outcome.counts["succeeded"]) == (2, 20, 20)
    assert outcome.counts["latency_ms_count"] == 20 and outcome.counts["latency_ms_mean"] == 5.0

    def failing(chunk):
        raise RuntimeError("boom")

    with chunks_lib.KnownIdFiles() as ids, pytest.raises(RuntimeError, match="boom"):
        chunks_lib.run_chunks(iter(chunks), failing, ids, str(tmp_path), basenames,
                              stopped=lambda: False)
    assert "chunk_failed" in caplog.text and "--resume" in caplog.text


# -- end to end ---------------------------------------------------------------------------------

def _ticket(i, body=None):
    return {"id": f"T-{i:03d}", "subject": f"S{i}", "body": body or f"Ticket body {i}."}


def _input(tmp_path):
    """Two files; duplicates inside a chunk and across chunks and files; bad and blank lines."""
    a = [_ticket(i) for i in range(12)]
    a[3] = _ticket(1, "duplicate in the first chunk")
    a[9] = _ticket(2, "duplicate of chunk 1 in chunk 2")
    a += ["{not json", "", json.dumps({"id": "T-900", "body": "  "}), _ticket(900, "valid now")]
    b = [_ticket(i) for i in range(20, 30)] + [_ticket(5, "duplicate from the other file"),
                                                 "[1, 2]", _ticket(25, "dup in file b")]
    write_jsonl(tmp_path / "in_a.jsonl", a)
    write_jsonl(tmp_path / "in_b.jsonl", b)
    return f"{tmp_path}/in_*.jsonl"


def _outcome(run):
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    counters = {k: summary[k] for k in ("read", "succeeded", "dead_lettered", "already_done",
                                        "duplicates", "parse_errors", "requests",
                                        "dead_letter_reasons", "ledger_balanced")}
    answers = sorted((r["id"], r["response"]) for r in run.results())
    dead = sorted((d["id"] or "", Path(d["source"]).name, d["line"], d["reason"])
                  for d in run.dead_letters())
    return counters, answers, dead


def _shard_names(output: Path, run_id: str):
    return sorted(p.name for p in output.glob(f"results-{run_id}-*"))


def test_chunked_run_equals_one_pass(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory()
    pattern = _input(tmp_path)
    one = run_pipeline("--input", pattern, "--base_url", sim.base_url,
                       "--local_chunk_tickets", "0")
    chunked = run_pipeline("--input", pattern, "--base_url", sim.base_url,
                           "--local_chunk_tickets", str(CHUNK))
    expected = _outcome(one)
    assert _outcome(chunked) == expected
    counters, answers, dead = expected
    assert counters["duplicates"] == 4 and counters["parse_errors"] == 3
    assert counters["ledger_balanced"] is True and len(answers) == 21
    assert ("T-002", "in_a.jsonl", 10, "duplicate_id") in dead  # 2nd chunk, first kept in 1st
    assert chunked.summary()["chunks"] == 4 and chunked.summary()["not_read"] == 0
    assert "chunks" not in one.summary()
    run_id = chunked.summary()["run_id"]
    assert _shard_names(chunked.output, run_id)[0].startswith(f"results-{run_id}-c0001-")
    assert len(_shard_names(chunked.output, run_id)) == 4


def test_chunked_resume_equals_one_pass_resume(run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory()
    pattern = _input(tmp_path)
    # An earlier, partial run: some of file a (one id of it is duplicated later, in file b).
    partial = write_jsonl(tmp_path / "partial.jsonl", [_ticket(i) for i in (0, 4, 5, 6, 21)])
    earlier = run_pipeline("--input", str(partial), "--base_url", sim.base_url)
    assert earlier.returncode == 0, earlier.stderr
    outputs = []
    for chunk in ("0", str(CHUNK)):
        output = tmp_path / f"resume-{chunk}"
        shutil.copytree(earlier.output, output)
        outputs.append(run_pipeline("--input", pattern, "--base_url", sim.base_url, "--resume",
                                    "--local_chunk_tickets", chunk, output=output))
    one, chunked = (_outcome(run) for run in outputs)
    assert chunked == one
    counters, answers, _ = one
    # T-005 is done: its duplicate in file b is already_done too, not duplicate_id.
    assert counters["already_done"] == 6 and counters["requests"] == 21 - 5
    assert counters["duplicates"] == 3 and len(answers) == 21  # the earlier run's five included


def test_stop_mid_chunks_counts_the_unread_and_resume_finishes(run_pipeline, simulator_factory,
                                                               tmp_path):
    sim = simulator_factory(latency_median_ms=150, latency_p99_ms=150, seed=1)
    n = 70
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i) for i in range(n)])
    out = tmp_path / "stopped"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--input", str(path), "--output", str(out),
         "--base_url", sim.base_url, "--max_concurrency", "2", "--local_chunk_tickets", "10",
         "--progress_interval_secs", "0.2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r" progress done=(\d+)", line)
        if not line or (match and int(match.group(1)) >= 12):
            break  # the live count goes on across chunks: this is the second one
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT" and summary["ledger_balanced"] is True
    assert 2 <= summary["chunks"] < 7 and summary["read"] == 10 * summary["chunks"]
    assert summary["read"] + summary["not_read"] == n
    assert set(summary["dead_letter_reasons"]) <= {"interrupted"}
    assert "not read" in stdout and "--resume" in stdout
    assert "chunks_not_read" in stderr
    assert (out / "report.html").exists()

    resumed = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--resume",
                           "--max_concurrency", "16", "--local_chunk_tickets", "10", output=out)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.summary()["already_done"] == summary["succeeded"]
    ids = sorted(r["id"] for r in resumed.results())
    assert ids == sorted(f"T-{i:03d}" for i in range(n))  # each id answered once, in all


def test_one_budget_for_all_chunks(run_pipeline, simulator_factory, tmp_path):
    # The engine (its budget, rate limiter, response store) lives across the chunks of a run:
    # a budget for the run is not a budget per chunk.
    sim = simulator_factory()
    path = write_jsonl(tmp_path / "t.jsonl", [_ticket(i, "words " * 20) for i in range(35)])
    run = run_pipeline("--input", str(path), "--base_url", sim.base_url, "--max_cost_usd",
                       "0.0004", "--max_concurrency", "1", "--local_chunk_tickets", str(CHUNK))
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["chunks"] == 5 and summary["ledger_balanced"] is True
    assert 0 < summary["cost_usd"] <= 0.0004
    assert summary["succeeded"] < CHUNK  # the budget ran out in the first chunk, for good
    assert summary["dead_letter_reasons"] == {"budget_exhausted": 35 - summary["succeeded"]}
