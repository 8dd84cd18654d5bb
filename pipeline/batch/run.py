"""``--api batch``: answer every ticket through the provider's Batch API, then write as online.

Three steps, the first two skipped when the journal says they were done (``--resume``):

1. **pack** — a Beam pipeline: the same read → validate (→ ``--resume``'s done ids) as online,
   then each ticket's request, rendered as online, written once per distinct request into
   ``OUTPUT/batch/JOB/round-1/requests-*.jsonl`` (:class:`~transforms.llm.batch_io.
   PackBatchRequests`);
2. **drive** — on the driver, no workers: upload, create in waves, wait, collect, resubmit in
   rounds (:class:`~pipeline.batch.driver.BatchDriver`), everything journaled
   (:mod:`pipeline.batch.journal`). ``--batch_submit_only`` stops after submitting (exit 0);
   the same command with ``--resume`` later waits and collects;
3. **collect** — ``pipeline.run.build`` with one more step, :class:`~transforms.llm.batch_io.
   AttachBatchOutcomes`: each ticket gets its request's outcome and ``CallModel`` answers from it
   (or online, for what the batches did not answer), so results, dead letters, reason codes,
   summary, report and ledger are exactly the online ones. :func:`look_again` then counts what
   batches abandoned while cancelling answered anyway (billed twice), and :func:`finish` closes
   the job.

Example (what ``pipeline.run.run`` does)::

    prepared = prepare(options, config)      # pack + drive; may raise UsageError, BatchJobError
    if not prepared.submitted_only:
        build(pipeline, prepared.config)      # the online pipeline, plus the outcomes
        ...; prepared = look_again(prepared.config, prepared)   # the summary's final figures
        ...; finish(prepared.config, prepared)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any, Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.batch import files as batch_files
from pipeline import config as config_lib
from pipeline.batch.driver import BatchDriver, BatchJobError, DriverSettings
from pipeline.batch.journal import Journal, fold
from pipeline.preflight import UsageError
from transforms import errors
from transforms.llm import resolve_api_key
from transforms.llm.providers import batch_client, batch_wire
from transforms.llm.batch_io import PackBatchRequests
from transforms.logs import event
from transforms.read import ReadTickets
from transforms.resume import ReadDoneIds
from transforms.sample import SampleTickets
from transforms.sinks import join_path
from transforms.validate import ValidateTickets

_LOG = logging.getLogger("ticketflow")

__all__ = ["BatchJobError", "Prepared", "build_pack", "dry_run_pack", "finish", "look_again",
           "prepare", "submitted_message", "warn_open_job", "with_outcomes"]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What the batch steps left for the collect pipeline.

    Attributes:
      config: The job's configuration with the outcome files set (``batch_api.outcomes``).
      figures: The summary's batch figures (batches created, rounds, ...).
      submitted_only: ``--batch_submit_only`` returned after submitting: nothing to collect yet.
      job: The batch job's id (the run id of the run that started it).
    """
    config: config_lib.JobConfig
    figures: Dict[str, Any]
    submitted_only: bool
    job: str


def fingerprint(config: config_lib.JobConfig) -> str:
    """What the requests depend on: a resumed job must be the same command's."""
    c = config.llm
    material = [config.input, config.replay, config.sample, dataclasses.asdict(config.fields),
                c.model,
                c.system_prompt, c.prompt_template, c.prompt_prefix, c.max_tokens, c.temperature,
                c.structured.schema if c.structured is not None else None]
    if c.provider != "openai":  # the request lines depend on these too
        material += [c.provider, c.prompt_cache, c.cache_ttl]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def _max_bytes(config: config_lib.JobConfig) -> int:
    """The provider's most bytes per batch (its input file, or its create call)."""
    return batch_wire(config.llm.provider).MAX_BYTES


def work_dir(config: config_lib.JobConfig, job: str) -> str:
    return join_path(config.output, f"batch/{job}")


def with_outcomes(config: config_lib.JobConfig, job: str) -> config_lib.JobConfig:
    """The configuration of the collect pipeline: the job's outcome files."""
    pattern = join_path(work_dir(config, job), "round-*/outcomes-*.jsonl")
    return dataclasses.replace(config, batch_api=dataclasses.replace(config.batch_api,
                                                                     outcomes=pattern))


def build_pack(p: beam.Pipeline, config: config_lib.JobConfig, prefix: str) -> None:
    """Wires the pack pipeline: read → validate (→ done ids) → request files at ``prefix``."""
    raw = p | "ReadTickets" >> ReadTickets(config.input, config.input_format)
    done_ids = p | "ReadDoneIds" >> ReadDoneIds(config.output) if config.resume else None
    checked = raw | "ValidateTickets" >> ValidateTickets(config.fields, done_ids=done_ids,
                                                         replay=config.replay)
    tickets = checked["tickets"]
    if config.sample:  # the same sample the collect pipeline answers
        tickets = tickets | "SampleTickets" >> SampleTickets(config.sample)
    tickets | "PackBatchRequests" >> PackBatchRequests(
        config.llm, prefix, config.batch_api.max_lines, _max_bytes(config))


def _pack(options, config: config_lib.JobConfig, job: str) -> List[Dict[str, Any]]:
    """Runs the pack pipeline; returns round 1's parts (name, path, lines, tokens)."""
    directory = join_path(work_dir(config, job), "round-1")
    stale = [m.path for m in FileSystems.match([join_path(directory, "*")])[0].metadata_list]
    if stale:  # a pack cut short by a crash: start it again from nothing
        FileSystems.delete(stale)
    event(_LOG, logging.INFO, "batch_packing", job=job, directory=directory)
    pipeline = beam.Pipeline(options=options)
    build_pack(pipeline, config, join_path(directory, "requests"))
    pipeline.run().wait_until_finish()
    parts = []
    matched = FileSystems.match([join_path(directory, "requests-*.jsonl")])[0].metadata_list
    for meta in sorted(matched, key=lambda m: m.path):
        lines, tokens = batch_files.scan_part(meta.path)
        if lines:
            name = meta.path.rsplit("/", 1)[-1][:-len(".jsonl")]
            parts.append(batch_files.part_record(name, meta.path, lines, tokens))
    event(_LOG, logging.INFO, "batch_packed", job=job, parts=len(parts),
          requests=sum(p["lines"] for p in parts), tokens=sum(p["tokens"] for p in parts))
    return parts


def _settings(config: config_lib.JobConfig, job: str) -> DriverSettings:
    b = config.batch_api
    return DriverSettings(
        work_dir=work_dir(config, job), max_lines=b.max_lines, max_bytes=_max_bytes(config),
        max_enqueued_tokens=b.max_enqueued_tokens, deadline_secs=b.deadline_secs,
        poll_secs=b.poll_secs, max_rounds=config.llm.retry.max_retries + 1,
        prices=(b.price, config.llm.price), submit_only=b.submit_only,
        cancel_wait_secs=b.cancel_wait_secs)


def prepare(options, config: config_lib.JobConfig, *, client: Optional[Any] = None,
            wall: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Prepared:
    """Packs, submits, waits and collects (or attaches to the job a crash left); no answer is
    written yet.

    Args:
      options: The run's pipeline options (the pack pipeline runs on the same runner).
      config: The job's configuration.
      client: The provider's Batch API (default: ``--provider``'s batch client on
        ``--base_url``).
      wall: Wall clock.
      sleep: Sleep between polls.

    Raises:
      UsageError: an unfinished batch job is under ``--output`` and ``--resume`` is not given,
        or it was submitted with other flags.
      BatchJobError: the provider refused what cannot be retried.
      KeyboardInterrupt: Ctrl-C while waiting (the batches keep running; resume collects them).
    """
    journal = Journal(config.output, wall=wall)
    events = journal.read()
    state = fold(events)
    mark = fingerprint(config)
    if state.open and not config.resume:
        if not config.overwrite:
            raise UsageError(
                f"--output {config.output!r} holds an unfinished batch job ({state.job}, "
                f"{state.batches_created} batch(es) created): run the same command with --resume "
                "to attach to it (nothing is submitted twice), or --overwrite to abandon it.")
        events.append(journal.append("abandoned", job=state.job))
        state = fold(events)
    if state.open and state.fingerprint != mark:
        raise UsageError(
            f"the batch job under --output ({state.job}) was submitted with other flags (input, "
            "model, prompt, template, schema, max_tokens or temperature): resume it with the same "
            "flags, or pass --overwrite instead of --resume to abandon it.")
    if not state.open:
        events.append(journal.append("job", job=config.run_id, fingerprint=mark))
        state = fold(events)
    job = str(state.job)
    if state.job != config.run_id:
        event(_LOG, logging.INFO, "batch_resumed", job=job, batches=state.batches_created,
              round=state.round, collected=state.collected_all)
    if not state.packed_rounds:
        parts = _pack(options, config, job)
        events.append(journal.append("packed", job=job, round=1, parts=parts))
        state = fold(events)
    if not state.collected_all:
        own = client is None
        if own:
            client = batch_client(config.llm, resolve_api_key(config.llm),
                                  retry=config.llm.retry)
        try:
            driver = BatchDriver(_settings(config, job), client, journal, events, wall=wall,
                                 sleep=sleep)
            done = driver.run()
        finally:
            if own:
                client.close()
        state = driver.state
        if not done:
            return Prepared(config, state.figures(), True, job)
    _warn_abandoned(state.figures())
    return Prepared(with_outcomes(config, job), state.figures(), False, job)


def _warn_abandoned(figures: Dict[str, Any]) -> None:
    if figures["batches_abandoned"]:
        event(_LOG, logging.WARNING, "batch_may_bill_twice",
              batch_ids=",".join(figures["abandoned_batch_ids"]),
              requests=figures["may_be_billed_twice"],
              note="these batches were still cancelling when --batch_cancel_wait_secs passed: "
                   "their tickets are answered online, and whatever they still answer is billed "
                   "by the Batch API too (the summary counts it)")


def look_again(config: config_lib.JobConfig, prepared: Prepared, *,
               client: Optional[Any] = None) -> Prepared:
    """After the collect pipeline: looks once more at the batches abandoned while cancelling.

    One that ended since has its output downloaded and the lines it answered counted (the
    summary's ``billed_twice``: those tickets were answered online too). Nothing of it is used
    as an answer.

    Args:
      config: The job's configuration.
      prepared: What :func:`prepare` returned.
      client: The provider's Batch API (default: ``--provider``'s batch client).

    Returns:
      ``prepared`` with the final figures; unchanged when nothing was abandoned or the provider
      could not be asked (logged: it changes only what the summary can confirm).
    """
    f = prepared.figures
    if f.get("batches_abandoned", 0) <= f.get("abandoned_seen_ended", 0):
        return prepared
    journal = Journal(config.output)
    events = journal.read()
    own = client is None
    if own:  # a report only: it must not hold the summary back for long
        client = batch_client(config.llm, resolve_api_key(config.llm), timeout=60.0,
                              retry=dataclasses.replace(config.llm.retry, max_retries=1))
    try:
        driver = BatchDriver(_settings(config, prepared.job), client, journal, events)
        driver.look_at_abandoned()
    except (errors.ProviderError, OSError) as exc:
        event(_LOG, logging.WARNING, "batch_abandoned_unknown", error=type(exc).__name__,
              message=str(exc)[:200], note="the summary gives the bound only")
        return prepared
    finally:
        if own:
            client.close()
    return dataclasses.replace(prepared, figures=driver.state.figures())


def dry_run_pack(options, config: config_lib.JobConfig) -> config_lib.JobConfig:
    """``--dry_run``: translates the pack pipeline (nothing runs, nothing is submitted); returns
    the collect pipeline's configuration, so that it is translated next."""
    pipeline = beam.Pipeline(options=options)
    build_pack(pipeline, config, join_path(work_dir(config, "dry-run"), "round-1/requests"))
    pipeline.run()
    return with_outcomes(config, "dry-run")


def warn_open_job(config: config_lib.JobConfig) -> None:
    """An online run over an unfinished batch job: its batches are paid for but would be unused;
    say how to use them instead."""
    state = fold(Journal(config.output).read())
    if state.open:
        event(_LOG, logging.WARNING, "batch_job_unfinished", job=state.job,
              batches=state.batches_created,
              note="--output holds an unfinished --api batch job whose answers this online run "
                   "does not use: stop and rerun with --api batch --resume to collect them")


def finish(config: config_lib.JobConfig, prepared: Prepared) -> None:
    """Closes the job once its collect pipeline wrote everything: a later ``--resume`` starts a
    new job for what is still unanswered."""
    journal = Journal(config.output)
    journal.read()
    journal.append("finished", job=prepared.job)


def submitted_message(config: config_lib.JobConfig, prepared: Prepared) -> str:
    """What ``--batch_submit_only`` prints: what was submitted and how to collect it."""
    f = prepared.figures
    return "\n".join([
        "ticketflow: batch job submitted",
        f"  job        {prepared.job}",
        f"  batches    {f['batches_created']} created ({f['requests_submitted']} requests)",
        f"  journal    {join_path(config.output, 'batch/journal')}",
        "  collect    run the same command with --resume (it waits for the provider, then "
        "writes results, dead letters and the summary)"])
