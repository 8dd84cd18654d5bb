"""The run's summary: from the metrics and the files written, as JSON and as a short table.

:func:`summarize` reads the counters the workers reported (``transforms.metrics.summarize``) and
counts what is really on disk, and checks the ledger: ``read == succeeded + dead_lettered +
already_done + replay_skipped + not_sampled`` and the files hold exactly those numbers. :func:`format_summary`
is what the driver prints. A chunked run (``pipeline/chunks.py``) writes its shards as
``results-RUNID-cKKKK-*``: the run's basename ``results-RUNID`` matches them all; records a
stopped chunked run did not read are ``not_read`` (outside the ledger: they were never read).

Example::

    summary = summarize(counts, config, wall_secs=12.5)
    print(format_summary(summary))
"""

from __future__ import annotations

from typing import Optional

from pipeline import config as config_lib
from pipeline.outputs import count_written
from pipeline.projection import projection_rows
from transforms import errors
from transforms import metrics as metrics_lib
from transforms.limits import concurrency as concurrency_lib
from transforms.sinks import DEAD_LETTER_BASENAME, RESULTS_BASENAME


def _chunk_suffix(chunk: Optional[int]) -> str:
    return "" if chunk is None else f"-c{chunk:04d}"


def results_basename(config: config_lib.JobConfig, chunk: Optional[int] = None) -> str:
    """Each run writes its own shards, so a resumed run never overwrites an earlier one.

    Args:
      chunk: A chunked run's chunk (its own shards); None: the whole run's prefix, which
        matches every chunk's shards too.
    """
    return f"{RESULTS_BASENAME}-{config.run_id}{_chunk_suffix(chunk)}"


def dead_letter_basename(config: config_lib.JobConfig, chunk: Optional[int] = None) -> str:
    """Like :func:`results_basename`, for dead letters."""
    return f"{DEAD_LETTER_BASENAME}-{config.run_id}{_chunk_suffix(chunk)}"


def concurrency_figure(config: config_lib.JobConfig) -> dict:
    """The summary's ``concurrency``: the fixed number, or what ``auto`` chose over time.

    ``auto``'s figure (:meth:`transforms.limits.concurrency.AdaptiveConcurrency.figure`) is read
    from the controller of the endpoint when the workers ran in the driver's process (the local
    runners' default); otherwise only the mode and the ceiling are known here. With
    ``--endpoints``, the first endpoint's figure, and every endpoint's under ``by_endpoint``.
    """
    llm = config.llm
    endpoints = llm.endpoints or (llm,)
    live = concurrency_lib.live_figures()
    figures = {}
    for endpoint in endpoints:
        if endpoint.adaptive_concurrency is None:
            figures[endpoint.figure_key()] = {"mode": "fixed",
                                              "final": endpoint.max_concurrency}
            continue
        figure = live.get(endpoint.figure_key())
        figures[endpoint.figure_key()] = (
            {**figure, "ceiling": endpoint.max_concurrency} if figure is not None else
            {"mode": "auto", "ceiling": endpoint.max_concurrency,
             "note": "the workers ran in other processes: no figure in the driver"})
    first = next((f for f in figures.values() if f["mode"] == "auto"),
                 next(iter(figures.values())))
    return {**first, "by_endpoint": figures} if llm.endpoints else first


def summarize(counts: dict, config: config_lib.JobConfig, wall_secs: float,
              batch: Optional[dict] = None) -> dict:
    """The run's summary from its metrics (``metrics_lib.summarize``) and the files it wrote.

    Args:
      batch: With ``--api batch``, the batch job's figures (``pipeline.batch.run``); the
        summary's ``batch`` block adds ``answered_by_batch`` and ``answered_online``.
    """
    percentiles = metrics_lib.latency_percentiles(counts, (0.5, 0.9, 0.99),
                                                  max_ms=counts.get("latency_ms_max"))
    written_results = count_written(config.output, results_basename(config))
    written_dead = count_written(config.output, dead_letter_basename(config))
    read = int(counts["tickets_read"])
    succeeded = int(counts["succeeded"])
    dead = int(counts["dead_lettered"])
    already_done = int(counts["already_done"])
    replay_skipped = int(counts["replay_skipped"])
    not_sampled = int(counts["not_sampled"])
    balanced = (read == succeeded + dead + already_done + replay_skipped + not_sampled
                and written_results == succeeded and written_dead == dead)
    summary = {
        "run_id": config.run_id,
        "read": read,
        "succeeded": succeeded,
        "dead_lettered": dead,
        "already_done": already_done,
        "replay_skipped": replay_skipped,
        "not_sampled": not_sampled,
        "cache_hits": int(counts["cache_hits"]),
        "cost_usd": round(counts["cost_nano_usd"] / 1e9, 6),
        # What the same answers would have cost online (equal to cost_usd with --api online).
        "online_cost_usd": round((counts["cost_nano_usd"]
                                  + counts.get("batch_discount_nano_usd", 0)) / 1e9, 6),
        # The provider's prompt cache: tokens read from it and written to it, and what it saved
        # against sending them as plain input (negative when writes outweighed the reads).
        "cache_read_tokens": int(counts.get("cache_read_tokens", 0)),
        "cache_write_tokens": int(counts.get("cache_write_tokens", 0)),
        "cache_saved_usd": round(counts.get("cache_saved_nano_usd", 0) / 1e9, 6),
        "parse_errors": int(counts["parse_errors"]),
        "duplicates": int(counts["duplicates"]),
        "requests": int(counts["requests"]),
        "retries": int(counts["retries"]),
        "rate_limited": int(counts["rate_limited"]),
        "server_errors": int(counts["server_errors"]),
        "timeouts": int(counts["timeouts"]),
        "prompt_tokens": int(counts["prompt_tokens"]),
        "completion_tokens": int(counts["completion_tokens"]),
        # Wall-clock time the sender was held back by the limiter (the most of any worker
        # process), and the per-ticket sum of waits (limiter and 429 retry-afters).
        "throttled_secs": round((counts.get("limiter_held_ms_max") or 0) / 1000.0, 3),
        "throttled_ticket_secs": round(counts["throttled_ms"] / 1000.0, 3),
        "outage_secs": round((counts.get("outage_ms_max") or 0) / 1000.0, 3),
        "latency_ms_mean": counts.get("latency_ms_mean"),
        "latency_ms_max": counts.get("latency_ms_max"),
        "latency_ms_p50": percentiles[0.5],
        "latency_ms_p90": percentiles[0.9],
        "latency_ms_p99": percentiles[0.99],
        "dead_letter_reasons": metrics_lib.dead_letter_reasons(counts),
        "wall_secs": round(wall_secs, 3),
        "tickets_per_sec": round((succeeded + dead) / wall_secs, 3) if wall_secs > 0 else None,
        "written_results": written_results,
        "written_dead_letters": written_dead,
        "ledger_balanced": balanced,
        "model": config.llm.model,
        "provider": config.llm.provider,
        "quota": _quota(counts, config),
        "output": config.output,
        "api": config.batch_api.api,
    }
    if config.llm.endpoints:
        summary["endpoints"] = metrics_lib.endpoint_figures(
            counts, [e.endpoint_name for e in config.llm.endpoints])
    if config.stream is not None:
        first = metrics_lib.latency_percentiles(
            counts, (0.5, 0.9, 0.99), max_ms=counts.get("first_response_ms_max"),
            prefix=metrics_lib.FIRST_RESPONSE_BUCKET_PREFIX)
        summary["streaming"] = {
            "source": config.stream.source,
            "first_response_ms_p50": first[0.5], "first_response_ms_p90": first[0.9],
            "first_response_ms_p99": first[0.99],
            "first_response_ms_max": counts.get("first_response_ms_max")}
    if batch is not None:
        by_batch = int(counts.get("answered_by_batch", 0))
        summary["batch"] = {**batch, "answered_by_batch": by_batch,
                            "answered_online": max(0, succeeded - by_batch
                                                   - int(counts["cache_hits"]))}
    return summary


def _quota(counts: dict, config: config_lib.JobConfig) -> dict:
    """Whether the limits were shared through Redis, and how often they had to fall back."""
    if not config.llm.shared_quota:
        return {"shared": False}
    return {"shared": True, "url": errors.redact_url(config.llm.shared_quota),
            "priority": config.llm.quota_priority,
            "fallback_events": int(counts.get("quota_fallbacks", 0)),
            "fallback_secs": round((counts.get("quota_fallback_ms_max") or 0) / 1000.0, 3)}


def _billed_twice(batch: dict) -> str:
    """The batches abandoned while cancelling, and what they may have cost twice."""
    ids = ", ".join(batch.get("abandoned_batch_ids") or [])
    seen, count = batch.get("abandoned_seen_ended", 0), batch["batches_abandoned"]
    text = (f"up to {batch['may_be_billed_twice']} ticket(s) may be billed by both the Batch API "
            f"and online: {count} batch(es) still cancelling after --batch_cancel_wait_secs "
            f"were answered online ({ids})")
    if seen:
        text += (f"; {batch.get('billed_twice', 0)} billed by both, from the final output of "
                 f"{seen} of them")
    return text


def _concurrency_row(figure: Optional[dict]) -> list:
    if not figure or figure.get("mode") != "auto" or "final" not in figure:
        return []
    return [("concurrency", f"auto: {figure['final']} at the end (p50 {figure['p50']}, "
                            f"{figure['min']}..{figure['max']}; {figure['drops']} drops, "
                            f"{figure['probes']} probes)")]


def cache_line(figures: dict) -> str:
    """The prompt cache's tokens and savings, in words (the summary's and the report's)."""
    saved = figures.get("cache_saved_usd") or 0.0
    return (f"{figures.get('cache_read_tokens', 0)} prompt tokens read from the provider's "
            f"cache, {figures.get('cache_write_tokens', 0)} written to it; "
            + (f"saved ${saved:.6f}" if saved >= 0 else f"cost ${-saved:.6f} more")
            + " against plain input")


def format_summary(summary: dict) -> str:
    """A short human-readable table."""
    rows = [
        ("read", summary["read"]),
        ("succeeded", summary["succeeded"]),
        ("dead lettered", f"{summary['dead_lettered']} (parse {summary['parse_errors']}, "
                          f"duplicates {summary['duplicates']})"),
        ("skipped", f"{summary['already_done']} already done (--resume), "
                    f"{summary['replay_skipped']} not replayable (--replay)"
                    + (f", {summary['not_sampled']} not sampled (--sample)"
                       if summary.get("not_sampled") else "")),
        ("cost", f"${summary['cost_usd']:.6f} ({summary['cache_hits']} answered from the "
                 "response store, free)"),
        ("requests", f"{summary['requests']} (retries {summary['retries']}, rate limited "
                     f"{summary['rate_limited']}, server errors {summary['server_errors']}, "
                     f"timeouts {summary['timeouts']})"),
        ("tokens", f"{summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion"),
        ("throttled", f"{summary['throttled_secs']} s held back by the rate limiter "
                      f"({summary['throttled_ticket_secs']} s summed over tickets)"),
        ("latency", f"p50 {summary.get('latency_ms_p50')} ms, p90 {summary.get('latency_ms_p90')}"
                    f" ms, p99 {summary.get('latency_ms_p99')} ms (max "
                    f"{summary.get('latency_ms_max')} ms)"),
        *_concurrency_row(summary.get("concurrency")),
        ("wall time", f"{summary['wall_secs']} s ({summary['tickets_per_sec']} tickets/s)"),
        ("ledger", "balanced: read == succeeded + dead lettered + skipped, and matches the files"
         if summary["ledger_balanced"] else
         f"NOT BALANCED: read {summary['read']} != succeeded {summary['succeeded']} + dead "
         f"lettered {summary['dead_lettered']} + skipped "
         f"{summary['already_done'] + summary['replay_skipped'] + summary['not_sampled']} "
         "(files: "
         f"{summary['written_results']} results, {summary['written_dead_letters']} dead letters)"),
    ]
    if summary.get("cache_read_tokens") or summary.get("cache_write_tokens"):
        rows.insert(5, ("prompt cache", cache_line(summary)))
    batch = summary.get("batch")
    if batch is not None:
        rows.insert(5, ("online cost", f"${summary['online_cost_usd']:.6f} (what the same "
                                       "answers would have cost online)"))
        rows.insert(6, ("batch", f"{batch['batches_created']} batches in {batch['rounds']} "
                                 f"round(s), {batch['answered_by_batch']} answered by the "
                                 f"Batch API, {batch['answered_online']} online"))
        if batch.get("batches_abandoned"):
            rows.insert(7, ("billed twice", _billed_twice(batch)))
    streaming = summary.get("streaming")
    if streaming is not None:
        rows.insert(-2, ("first response", f"p50 {streaming['first_response_ms_p50']} ms, p90 "
                         f"{streaming['first_response_ms_p90']} ms, p99 "
                         f"{streaming['first_response_ms_p99']} ms (arrival to result)"))
    if summary.get("outage_secs"):
        rows.append(("outage", f"{summary['outage_secs']} s with the provider down (circuit "
                               "breaker open; tickets waited, keeping their retries)"))
    for name, e in (summary.get("endpoints") or {}).items():
        rows.append((f"endpoint {name}", f"{e['succeeded']} answered ({e['share']:.0%}), "
                     f"{e['requests']} requests, rate limited {e['rate_limited']}, errors "
                     f"{e['errors']}"))
    quota = summary.get("quota") or {}
    if quota.get("shared"):
        fallback = (f"; Redis unreachable {quota['fallback_events']} time(s), "
                    f"{quota['fallback_secs']} s on the static per-worker share"
                    if quota.get("fallback_events") else "")
        rows.append(("quota", f"shared through {quota['url']}{fallback}"))
    reasons = summary.get("dead_letter_reasons") or {}
    if reasons:
        rows.insert(3, ("  by reason", ", ".join(f"{k} {v}" for k, v in reasons.items())))
    if summary.get("interrupted"):
        rows.append(("interrupted", f"stopped by {summary['interrupted']}: "
                     f"{reasons.get('interrupted', 0)} ticket(s) not answered are dead letters "
                     "'interrupted' (replay them)"))
    if summary.get("not_read"):
        rows.append(("not read", (f"{summary['not_read']} record(s) of the chunks after the "
                                  "stop were not read: run the same command with --resume to "
                                  "answer them and the interrupted ones")))
    projection = summary.get("projection")
    if projection:
        rows.extend(projection_rows(projection))
    width = max(len(name) for name, _ in rows)
    title = "ticketflow summary" + (" (a SAMPLE run: --sample)" if projection else "")
    lines = [title] + [f"  {name.ljust(width)}  {value}" for name, value in rows]
    lines.append(f"  {'output'.ljust(width)}  {summary['output']}")
    if summary.get("report"):
        lines.append(f"  {'report'.ljust(width)}  {summary['report']}")
    return "\n".join(lines)
