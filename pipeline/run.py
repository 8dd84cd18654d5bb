"""Builds and runs the ticketflow pipeline; reports the summary and checks the ledger.

``build(p, config)`` only wires labelled transforms (read → validate → batch → call → write, with
the dead-letter branch beside it); ``run(argv)`` parses flags, checks what can be checked before
any work (flags, input, output, endpoint and key: ``pipeline/preflight.py``), runs while showing
its progress and handling SIGINT/SIGTERM (``pipeline/watch.py``), then writes
``PREFIX/summary.json`` and ``PREFIX/report.html`` (``pipeline/report/``) and prints the summary.

Exit codes: 0 the ledger balances; 1 the pipeline failed or the ledger does not balance;
2 a flag or the environment is wrong (one line on stderr says how to fix it), found before the
run or by its first requests (a wrong base URL, model or key fails the job:
``transforms/limits/trial.py``); 130 stopped by SIGINT/SIGTERM (unsent tickets are dead letters
``interrupted``).
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
from apache_beam.options.pipeline_options import (DebugOptions, DirectOptions, PipelineOptions,
                                                  StandardOptions, TestOptions)

from pipeline.batch import run as batch_run
from pipeline.stream import run as stream_run
from pipeline import chunks as chunks_lib
from pipeline import config as config_lib
from pipeline import estimate as estimate_lib
from pipeline import flags as flags_lib
from pipeline import logs
from pipeline import preflight as preflight_lib
from pipeline import progress
from pipeline.report import page as report_lib
from pipeline import watch
from pipeline import options as options_lib
from pipeline.options import TicketflowOptions
from pipeline import projection as projection_lib
from pipeline.outputs import completion_times, count_input, ticket_costs
from pipeline.preflight import UsageError
from pipeline.summary import (concurrency_figure, dead_letter_basename, format_summary,
                              results_basename, summarize)
from transforms import errors
from transforms import metrics as metrics_lib
from transforms import sinks
from transforms.batch import BatchTickets
from transforms.llm import CallModel
from transforms.llm.batch_io import AttachBatchOutcomes
from transforms.logs import event
from transforms.pricing import load_pricing
from transforms.read import ReadTickets
from transforms.resume import ReadDoneIds
from transforms.sample import SampleTickets
from transforms.structured import schema_overhead_tokens
from transforms.validate import ValidateTickets

_LOG = logging.getLogger("ticketflow")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = watch.EXIT_INTERRUPTED


def build(p: beam.Pipeline, config: config_lib.JobConfig,
          chunk: Optional[chunks_lib.Chunk] = None) -> Dict[str, beam.PCollection]:
    """Wires the pipeline into ``p``.

    Args:
      chunk: In a chunked run, the slice of the input to read, the ids of earlier chunks and
        runs (they replace ``ReadDoneIds``), and the chunk's own shard names.

    Returns:
      The ``results`` and ``dead_letters`` PCollections (before writing), for tests.
    """
    index = chunk.index if chunk is not None else None
    if config.stream is not None:
        return stream_run.build(p, config, results_basename(config), dead_letter_basename(config))
    raw = p | "ReadTickets" >> ReadTickets(config.input, config.input_format,
                                           pieces=chunk.pieces if chunk is not None else None)
    done_ids = (p | "ReadDoneIds" >> ReadDoneIds(config.output)
                if config.resume and chunk is None else None)
    checked = raw | "ValidateTickets" >> ValidateTickets(
        config.fields, done_ids=done_ids, replay=config.replay,
        known=chunk.known if chunk is not None else None)
    tickets = checked["tickets"]
    if config.sample:
        tickets = tickets | "SampleTickets" >> SampleTickets(config.sample)
    if config.batch_api.outcomes:
        # --api batch: each ticket carries its Batch API outcome; CallModel answers from it.
        tickets = tickets | "AttachBatchOutcomes" >> AttachBatchOutcomes(
            config.llm, config.batch_api.outcomes)
    batches = tickets | "BatchTickets" >> BatchTickets(config.batch)
    called = batches | "CallModel" >> CallModel(config.llm, stop_signal=watch.stop_signal)
    dead_letters = ((checked["dead_letter"], called["dead_letter"])
                    | "AllDeadLetters" >> beam.Flatten())
    called["results"] | "WriteResults" >> sinks.WriteResults(
        config.output, config.output_format, basename=results_basename(config, index),
        structured=config.llm.structured, endpoints=bool(config.llm.endpoints))
    dead_letters | "WriteDeadLetters" >> sinks.WriteDeadLetters(
        config.output, basename=dead_letter_basename(config, index))
    return {"results": called["results"], "dead_letters": dead_letters}


def _start_simulator(flags: str):
    import simulator  # pylint: disable=import-outside-toplevel
    from simulator.config import config_from_argv  # pylint: disable=import-outside-toplevel

    try:
        sim_config = config_from_argv(["--port", "0", *shlex.split(flags)])
    except SystemExit:
        raise UsageError(f"--simulator_flags {flags!r} are not valid simulator flags; "
                         "see `python -m simulator --help`.") from None
    return simulator.start(sim_config)


def _estimate(config: config_lib.JobConfig) -> int:
    """--estimate: read and validate the input, project tokens, cost and duration; no calls."""
    preflight_lib.check_input(config)
    report = estimate_lib.estimate(estimate_lib.EstimateInputs(
        pattern=config.input, input_format=config.input_format, fields=config.fields,
        system_prompt=config.llm.system_prompt, model=config.llm.model,
        max_tokens=config.llm.max_tokens, pricing=load_pricing(config.pricing_file),
        expected_completion_tokens=config.expected_completion_tokens,
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute, requests_per_day=config.llm.job_requests_per_day,
        input_tokens_per_minute=config.llm.job_input_tokens_per_sec * 60,
        output_tokens_per_minute=config.llm.job_output_tokens_per_sec * 60,
        prompt_template=config.llm.prompt_template,
        prompt_prefix=config.llm.prompt_prefix,
        prompt_cache=config.llm.prompt_cache, cache_ttl=config.llm.cache_ttl,
        provider=config.llm.provider,
        # The response schema travels with every request and is billed as prompt.
        extra_prompt_tokens=(schema_overhead_tokens(config.llm.structured.schema)
                             if config.llm.structured else 0)))
    print(estimate_lib.format_estimate(report))
    return EXIT_OK


def _batch_failed(exc: BaseException) -> int:
    _LOG.debug("batch job failed", exc_info=True)
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    print(f"ticketflow: error: the batch job failed: {message[:500]} (run the same command "
          "with --resume to continue it)", file=sys.stderr)
    return EXIT_FAILED


def _projection(config: config_lib.JobConfig, summary: dict,
                cpu_per_ticket: Optional[float]) -> Optional[dict]:
    """The full job as the sample projects it (``pipeline/projection.py``)."""
    price = config.llm.price
    settings = projection_lib.Settings(
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute, max_tokens=config.llm.max_tokens,
        # auto: what it held (time-weighted median), not its ceiling
        max_concurrency=summary["concurrency"].get("p50") or config.llm.max_concurrency,
        worker_processes=config.worker_processes,
        price=price, batch_price=config.batch_api.price, cpu_secs_per_ticket=cpu_per_ticket,
        cache_ttl=config.llm.cache_ttl)
    costs = ticket_costs(config.output, results_basename(config), dead_letter_basename(config))
    return projection_lib.project(summary, costs, settings)


#: Prism's experiment that turns off its bundle splits (docs/runners.md, "Prism: no bundle splits").
PRISM_NO_SPLITS = "prism_disable_sdf_split"


def local_runner_options(options: PipelineOptions) -> PipelineOptions:
    """Runs ``DirectRunner`` (and the default) on Beam's in-process FnApiRunner; Prism unsplit.

    Why the FnApiRunner: ``GroupIntoBatches`` declares a processing-time timer, so Beam 2.77's
    DirectRunner picks its BundleBasedDirectRunner, which fails with an ``AssertionError`` in a
    downstream ``GroupByKey`` when a batch is flushed at the end of the window (see README,
    "Runners"). The FnApiRunner runs the same pipeline correctly, honours
    ``--direct_num_workers`` and ``--direct_running_mode``, and does not first try to download
    Prism.

    Why Prism gets ``--experiments prism_disable_sdf_split``: Prism 2.77 splits a bundle that
    stalls (a slow ``CallModel`` fused after ``GroupIntoBatches``) and at once runs the residual
    as a new bundle, unlocking its keys while the primary still runs them. The key cut by the
    split is then batched by two bundles at the same time, each from the state committed before
    either, and the one that commits last overwrites the other's buffered tickets: they are never
    sent, and the ledger does not balance. Without splits a key's bundles run one at a time.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "Direct"):
        standard.runner = "FnApiRunner"
    elif _runner_name(options).rsplit(".", 1)[-1].lower() in ("prism", "prismrunner"):
        options.view_as(DebugOptions).add_experiment(PRISM_NO_SPLITS)
        options_lib.no_job_deadline(options)
    return options



def _start_fields(config: config_lib.JobConfig, runner: str) -> dict:
    """The start line: what runs where, and within which limits (short enough for one line)."""
    fields = {"input": config.input, "output": config.output, "model": config.llm.model,
              "runner": runner,
              "rpm": f"{config.requests_per_minute:g}" if config.requests_per_minute else "none",
              "tpm": f"{config.tokens_per_minute:g}" if config.tokens_per_minute else "none",
              "concurrency": config.llm.max_concurrency}
    llm = config.llm
    for name, per_sec, scale in (("itpm", llm.job_input_tokens_per_sec, 60),
                                 ("otpm", llm.job_output_tokens_per_sec, 60),
                                 ("rpd", llm.job_requests_per_day, 1)):
        if per_sec:  # only when set: most jobs have neither
            fields[name] = f"{per_sec * scale:g}"
    if config.max_cost_usd:
        fields["max_cost_usd"] = f"{config.max_cost_usd:g}"
    if config.llm.shared_quota:
        fields["shared_quota"] = "on"
    if config.worker_processes > 1:
        fields.update(worker_processes=config.worker_processes,
                      worker_share=round(config.worker_share, 3))
    return fields


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def _run_chunks(options: PipelineOptions, config: config_lib.JobConfig, chunks,
                stopper: watch.GracefulStop) -> chunks_lib.Outcome:
    """Runs the same pipeline over each chunk in turn (``pipeline/chunks.py``)."""
    def run_one(chunk: chunks_lib.Chunk) -> dict:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config, chunk)
        result = pipeline.run()
        result.wait_until_finish()
        return metrics_lib.summarize(result.metrics())

    def basenames(index: int):
        return results_basename(config, index), dead_letter_basename(config, index)

    with chunks_lib.KnownIdFiles() as ids:
        if config.resume:
            ids.read_done(config.output)
        return chunks_lib.run_chunks(chunks, run_one, ids, config.output, basenames,
                                     stopped=lambda: stopper.interrupted)


def _timeline(config: config_lib.JobConfig, live: bool, started_wall: float):
    """Per-second completions: from the live counters, else from the written files' timestamps."""
    per_second = progress.STATS.snapshot()["per_second"] if live else {}
    if per_second:
        return report_lib.timeline_from_per_second(per_second, started_wall)
    try:
        ok, dead = completion_times(config.output)
    except Exception:  # noqa: BLE001 - the plot is a nicety; the summary is what matters
        _LOG.debug("cannot read completion times", exc_info=True)
        return []
    return report_lib.timeline_from_times(ok, dead, started_wall)


def _write_report(config, summary, live, started_wall, counts_histogram) -> Optional[str]:
    path = sinks.join_path(config.output, "report.html")
    try:
        stream = (report_lib.stream_data(config.output, results_basename(config), started_wall)
                  if config.stream is not None else None)
        report_lib.write(path, summary, _timeline(config, live, started_wall), counts_histogram,
                         quota=report_lib.quota_data(config, live, started_wall), stream=stream)
    except Exception as exc:  # noqa: BLE001 - a failed report must not fail a finished job
        event(_LOG, logging.WARNING, "report_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    return path


def run(argv: Optional[List[str]] = None) -> int:
    """Runs the job; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # TicketflowOptions (not PipelineOptions) so that --help lists our flags too.
    options = local_runner_options(TicketflowOptions(argv))
    flag_problem = flags_lib.flag_error(argv)  # Beam only warns about unknown flags
    if flag_problem:
        print(f"ticketflow: error: {flag_problem}", file=sys.stderr)
        return EXIT_USAGE
    dry_run = bool(options.view_as(TestOptions).dry_run)
    ours = options.view_as(TicketflowOptions)
    logs.configure(ours.log_level or "INFO", ours.log_format or "text",
                   write=watch.write_log_line)
    chunking_requested = ours.local_chunk_tickets
    try:
        config = config_lib.from_options(options)
        if config.estimate:
            return _estimate(config)
        if config.stream is not None:
            options, config = stream_run.prepare(options, config)
            chunking_requested = 0
        chunk_size, no_chunks = chunks_lib.chunk_tickets(
            chunking_requested, _runner_name(options),
            options.view_as(DirectOptions).direct_running_mode, config, dry_run)
        if no_chunks and chunking_requested:
            event(_LOG, logging.INFO, "chunks_off", reason=no_chunks)
        stale_outputs = []
        if not dry_run:
            if config.stream is None:
                preflight_lib.check_input(config)
            stale_outputs = preflight_lib.check_output(config)
    except (config_lib.ConfigError, UsageError) as exc:
        print(f"ticketflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.price_known:
        _LOG.warning("no price for model %r in %s: costs are counted as $0 (add it with "
                     "--pricing_file)", config.llm.model, config.pricing_file or "pricing.json")

    sim = None
    try:
        if config.simulate:
            try:
                sim = _start_simulator(config.simulator_flags)
            except UsageError as exc:
                print(f"ticketflow: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            config = config_lib.with_base_url(config, sim.base_url)
            event(_LOG, logging.DEBUG, "simulator_started", base_url=sim.base_url)
        # Preflight speaks OpenAI's routes; another provider's first requests are the check.
        if not config.skip_preflight and not dry_run:
            try:
                preflight_lib.check_endpoints(config.llm)
            except UsageError as exc:
                print(f"ticketflow: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
        if stale_outputs:
            FileSystems.delete(stale_outputs)

        runner = _runner_name(options)
        live = watch.live_counts_possible(
            runner, options.view_as(DirectOptions).direct_running_mode)
        mode = watch.mode_for(live, config.quiet)
        event(_LOG, logging.INFO, "start", **_start_fields(config, runner))
        # The whole resolved configuration: summary.json has it too; not for the first screen.
        event(_LOG, logging.DEBUG, "config", config=config_lib.redacted(config), progress=mode)
        started = time.monotonic()
        started_wall = time.time()
        prepared = None
        if not config.batch_api.batch and not dry_run:
            batch_run.warn_open_job(config)
        if config.batch_api.batch:
            try:
                prepared = (None if dry_run else batch_run.prepare(options, config))
            except UsageError as exc:
                print(f"ticketflow: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
                return _batch_failed(exc)
            except KeyboardInterrupt:
                print("ticketflow: stopped while waiting for the batches; they keep running at "
                      "the provider: run the same command with --resume to collect them.",
                      file=sys.stderr)
                return EXIT_INTERRUPTED
            if dry_run:
                config = batch_run.dry_run_pack(options, config)
            elif prepared.submitted_only:
                print(batch_run.submitted_message(config, prepared))
                return EXIT_OK
            else:
                config = prepared.config
        progress.STATS.reset()
        total = (count_input(config.input, config.input_format)
                 if mode in (watch.MODE_BAR, watch.MODE_LINES) and config.stream is None
                 else None)
        chunks = chunks_lib.start(chunk_size, config, explicit=chunking_requested is not None)
        pipeline = None
        if chunks is None:
            pipeline = beam.Pipeline(options=options)
            build(pipeline, config)
        if config.stream is None:
            reporter = watch.ProgressReporter(
                mode, config.progress_interval_secs, total, runner,
                cost=lambda snap: snap.get("cost_nano_usd", 0) / 1e9)
            stopper = watch.GracefulStop(config.drain_secs, graceful=live,
                                         on_stop=reporter.stopping)
        else:
            reporter, stopper = stream_run.watchers(config, runner)
        unlisten = metrics_lib.listen(progress.STATS)
        cpu = projection_lib.CpuMeter()
        unlisten_cpu = metrics_lib.listen(cpu) if config.sample and live else (lambda: None)
        chunked = None
        try:
            with stopper, reporter:
                if chunks is not None:
                    chunked = _run_chunks(options, config, chunks, stopper)
                    counts = chunked.counts
                else:
                    result = pipeline.run()
                    if dry_run:
                        print("ticketflow: dry run: job built, not submitted")
                        return EXIT_OK
                    counts = stream_run.finish(result)
        except Exception as exc:  # noqa: BLE001 - one clear line, not a runner traceback
            _LOG.debug("pipeline failed", exc_info=True)
            misconfigured = errors.misconfiguration(exc)
            if misconfigured is not None:  # the first requests: a wrong base URL, model or key
                print(f"ticketflow: error: {misconfigured}", file=sys.stderr)
                return EXIT_USAGE
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            print(f"ticketflow: error: the pipeline failed: {message[:500]}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            unlisten()
            unlisten_cpu()
        wall = time.monotonic() - started
        if prepared is not None:
            prepared = batch_run.look_again(config, prepared)
        summary = summarize(counts, config, wall,
                            batch=prepared.figures if prepared is not None else None)
        if chunked is not None:
            summary["chunks"] = chunked.chunks
            summary["not_read"] = chunked.not_read
        summary["concurrency"] = concurrency_figure(config)
        if config.sample:
            summary["sample"] = config.sample
            summary["projection"] = _projection(config, summary, cpu.per_ticket())
        summary["interrupted"] = stopper.signal_name
        if sim is not None:
            summary["simulator"] = {k: v for k, v in sim.stats().items() if k != "per_second"}
        summary["config"] = config_lib.redacted(config)
        histogram = metrics_lib.latency_histogram(counts)
        summary["report"] = _write_report(config, summary, live, started_wall, histogram)
        blob = json.dumps(summary, indent=2, default=str).encode("utf-8")
        for name in ("summary.json", f"summary-{config.run_id}.json"):
            with FileSystems.create(sinks.join_path(config.output, name)) as handle:
                handle.write(blob)
        print(format_summary(summary))
        # In text logs the printed summary says it all; JSON logs keep the event for machines.
        event(_LOG, logging.INFO if config.log_format == "json" else logging.DEBUG, "summary", **{
            k: summary[k] for k in ("read", "succeeded", "dead_lettered", "requests", "retries",
                                    "rate_limited", "latency_ms_p50", "latency_ms_p99",
                                    "wall_secs", "tickets_per_sec", "ledger_balanced",
                                    "interrupted", "dead_letter_reasons")})
        if stopper.interrupted:
            return EXIT_INTERRUPTED
        if not summary["ledger_balanced"]:
            return EXIT_FAILED
        if prepared is not None:
            batch_run.finish(config, prepared)
        return EXIT_OK
    finally:
        if sim is not None:
            sim.close()
        if config.stream is not None:
            stream_run.cleanup(config)
