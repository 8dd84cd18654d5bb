"""Builds and runs the ticketflow pipeline; reports the summary and checks the ledger.

``build(p, config)`` only wires labelled transforms (read → validate → batch → call → write, with
the dead-letter branch beside it); ``run(argv)`` parses flags, checks what can be checked before
any work (flags, input, key), runs, then writes ``PREFIX/summary.json`` and prints the summary.

Exit codes: 0 the ledger balances; 1 the pipeline failed or the ledger does not balance;
2 a flag or the environment is wrong (one line on stderr says how to fix it).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import config as config_lib
from pipeline.options import TicketflowOptions
from transforms import metrics as metrics_lib
from transforms import sinks
from transforms.batch import BatchTickets
from transforms.llm import CallModel
from transforms.read import ReadTickets
from transforms.validate import ValidateTickets

_LOG = logging.getLogger("ticketflow")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build(p: beam.Pipeline, config: config_lib.JobConfig) -> Dict[str, beam.PCollection]:
    """Wires the pipeline into ``p``.

    Returns:
      The ``results`` and ``dead_letters`` PCollections (before writing), for tests.
    """
    raw = p | "ReadTickets" >> ReadTickets(config.input, config.input_format)
    checked = raw | "ValidateTickets" >> ValidateTickets(config.fields)
    batches = checked["tickets"] | "BatchTickets" >> BatchTickets(config.batch)
    called = batches | "CallModel" >> CallModel(config.llm)
    dead_letters = ((checked["dead_letter"], called["dead_letter"])
                    | "AllDeadLetters" >> beam.Flatten())
    called["results"] | "WriteResults" >> sinks.WriteResults(config.output, config.output_format,
                                                             structured=config.llm.structured)
    dead_letters | "WriteDeadLetters" >> sinks.WriteDeadLetters(config.output)
    return {"results": called["results"], "dead_letters": dead_letters}


class UsageError(Exception):
    """Something to fix before the job can run; exit code 2."""


def preflight(config: config_lib.JobConfig) -> None:
    """Checks what would otherwise fail late: the input matches files, the output is free.

    Raises:
      UsageError: with a one-line message saying how to fix it.
    """
    patterns = [p.strip() for p in config.input.split(",") if p.strip()]
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - any filesystem error is the user's to fix
            raise UsageError(f"--input {pattern!r}: cannot list it ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
        if not matched:
            raise UsageError(f"--input {pattern!r} matches no file: check the path or glob "
                             "(quote globs so the shell does not expand them).")
    existing = sinks.existing_outputs(config.output)
    if existing:
        if not config.overwrite:
            raise UsageError(
                f"--output {config.output!r} already holds {len(existing)} output file(s) of an "
                "earlier run: choose another --output or pass --overwrite to replace them.")
        FileSystems.delete(existing)


def _start_simulator(flags: str):
    import simulator  # pylint: disable=import-outside-toplevel
    from simulator.config import config_from_argv  # pylint: disable=import-outside-toplevel

    try:
        sim_config = config_from_argv(["--port", "0", *shlex.split(flags)])
    except SystemExit:
        raise UsageError(f"--simulator_flags {flags!r} are not valid simulator flags; "
                         "see `python -m simulator --help`.") from None
    return simulator.start(sim_config)


def summarize(result, config: config_lib.JobConfig, wall_secs: float) -> dict:
    """The run's summary from its metrics and from the files it wrote."""
    counts = metrics_lib.summarize(result.metrics())
    written_results = sinks.count_records(config.output, sinks.RESULTS_BASENAME)
    written_dead = sinks.count_records(config.output, sinks.DEAD_LETTER_BASENAME)
    read = int(counts["tickets_read"])
    succeeded = int(counts["succeeded"])
    dead = int(counts["dead_lettered"])
    balanced = (read == succeeded + dead and written_results == succeeded
                and written_dead == dead)
    summary = {
        "read": read,
        "succeeded": succeeded,
        "dead_lettered": dead,
        "parse_errors": int(counts["parse_errors"]),
        "duplicates": int(counts["duplicates"]),
        "requests": int(counts["requests"]),
        "retries": int(counts["retries"]),
        "rate_limited": int(counts["rate_limited"]),
        "server_errors": int(counts["server_errors"]),
        "timeouts": int(counts["timeouts"]),
        "prompt_tokens": int(counts["prompt_tokens"]),
        "completion_tokens": int(counts["completion_tokens"]),
        "throttled_secs": round(counts["throttled_ms"] / 1000.0, 3),
        "latency_ms_mean": counts.get("latency_ms_mean"),
        "latency_ms_max": counts.get("latency_ms_max"),
        "wall_secs": round(wall_secs, 3),
        "tickets_per_sec": round((succeeded + dead) / wall_secs, 3) if wall_secs > 0 else None,
        "written_results": written_results,
        "written_dead_letters": written_dead,
        "ledger_balanced": balanced,
        "model": config.llm.model,
        "output": config.output,
    }
    return summary


def format_summary(summary: dict) -> str:
    """A short human-readable table."""
    rows = [
        ("read", summary["read"]),
        ("succeeded", summary["succeeded"]),
        ("dead lettered", f"{summary['dead_lettered']} (parse {summary['parse_errors']}, "
                          f"duplicates {summary['duplicates']})"),
        ("requests", f"{summary['requests']} (retries {summary['retries']}, rate limited "
                     f"{summary['rate_limited']}, server errors {summary['server_errors']}, "
                     f"timeouts {summary['timeouts']})"),
        ("tokens", f"{summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion"),
        ("throttled", f"{summary['throttled_secs']} s"),
        ("wall time", f"{summary['wall_secs']} s ({summary['tickets_per_sec']} tickets/s)"),
        ("ledger", "balanced: read == succeeded + dead lettered, and matches the files"
         if summary["ledger_balanced"] else
         f"NOT BALANCED: read {summary['read']} != succeeded {summary['succeeded']} + dead "
         f"lettered {summary['dead_lettered']} (files: {summary['written_results']} results, "
         f"{summary['written_dead_letters']} dead letters)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["ticketflow summary"] + [f"  {name.ljust(width)}  {value}" for name, value in rows]
    lines.append(f"  {'output'.ljust(width)}  {summary['output']}")
    return "\n".join(lines)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _LOG.setLevel(getattr(logging, level))
    if level != "DEBUG":
        # Beam's local runners are chatty at INFO; an operator wants ticketflow's own lines.
        for noisy in ("apache_beam", "httpx", "httpx2", "openai", "aiohttp"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def local_runner_options(options: PipelineOptions) -> PipelineOptions:
    """Runs ``DirectRunner`` (and the default) on Beam's in-process FnApiRunner.

    Why: ``GroupIntoBatches`` declares a processing-time timer, so Beam 2.77's DirectRunner picks
    its BundleBasedDirectRunner, which fails with an ``AssertionError`` in a downstream
    ``GroupByKey`` when a batch is flushed at the end of the window (see README, "Runners").
    The FnApiRunner runs the same pipeline correctly, honours ``--direct_num_workers`` and
    ``--direct_running_mode``, and does not first try to download Prism.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "Direct"):
        standard.runner = "FnApiRunner"
    return options


def run(argv: Optional[List[str]] = None) -> int:
    """Runs the job; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = local_runner_options(PipelineOptions(argv))
    ours = options.view_as(TicketflowOptions)
    _configure_logging(ours.log_level or "INFO")
    try:
        config = config_lib.from_options(options)
        preflight(config)
    except (config_lib.ConfigError, UsageError) as exc:
        print(f"ticketflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    sim = None
    try:
        if config.simulate:
            try:
                sim = _start_simulator(config.simulator_flags)
            except UsageError as exc:
                print(f"ticketflow: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            config = config_lib.with_base_url(config, sim.base_url)
            _LOG.info("simulator started at %s", sim.base_url)
        _LOG.info("starting: input=%s output=%s model=%s worker processes=%d share=%.3f",
                  config.input, config.output, config.llm.model, config.worker_processes,
                  config.worker_share)
        _LOG.debug("config: %s", json.dumps(config_lib.redacted(config), default=str))
        started = time.monotonic()
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as exc:  # noqa: BLE001 - one clear line, not a runner traceback
            _LOG.debug("pipeline failed", exc_info=True)
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            print(f"ticketflow: error: the pipeline failed: {message[:500]}", file=sys.stderr)
            return EXIT_FAILED
        wall = time.monotonic() - started
        summary = summarize(result, config, wall)
        if sim is not None:
            summary["simulator"] = {k: v for k, v in sim.stats().items() if k != "per_second"}
        with FileSystems.create(sinks.join_path(config.output, "summary.json")) as handle:
            handle.write(json.dumps(summary, indent=2, default=str).encode("utf-8"))
        print(format_summary(summary))
        return EXIT_OK if summary["ledger_balanced"] else EXIT_FAILED
    finally:
        if sim is not None:
            sim.close()
