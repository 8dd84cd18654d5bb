"""Outage benchmark: one job while the provider is killed mid-run and restarted later.

    figures = scenario_outage(bench, tickets=2000, rpm=1200, down_secs=90)

The simulator (``python -m simulator --port P --rpm R --burst_secs 1``, log-normal latency) is
started on a fixed free port, ``python -m pipeline`` runs with its default flags apart from
``--requests_per_minute R``; once a quarter of the tickets are answered the simulator is
terminated (refused connections from then on), and started again on the same port
``down_secs`` later. Figures, from the job's ``summary.json``: ``outage_dead_letters`` (target
0), ``outage_secs`` (how long the job saw the provider down), ``outage_retries`` (attempts
after the first). With ``src`` (a source tree of an older commit, see
:func:`benchmarks.jobs.source_tree`) the same run measures that commit's pipeline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.jobs import Job, Provider, free_port
from benchmarks.run import Bench, _latency_flags, _remove_tree

#: The simulator is killed once this fraction of the tickets is answered.
KILL_AFTER = 0.25


def scenario_outage(bench: Bench, tickets: int, rpm: int, down_secs: float,
                    src: Path | None = None, prefix: str = "") -> dict[str, Any]:
    """Runs one job through a provider outage of ``down_secs`` seconds.

    Args:
      bench: Ticket files and the work directory.
      tickets: How many tickets the job gets.
      rpm: The provider's limit (per one-second slice) and the job's ``--requests_per_minute``.
      down_secs: How long the provider stays down.
      src: Run the pipeline of this source tree instead of ours.
      prefix: Prepended to every figure's key (``"baseline_"`` for an older commit).

    Returns:
      ``outage_dead_letters``, ``outage_secs``, ``outage_retries``, ``outage_down_secs`` and
      ``details_outage`` (each prefixed).

    Raises:
      RuntimeError: when the job fails, or ends before the provider could be killed.
    """
    label = f"{prefix}outage"
    bench.log(f"  {label}: {tickets} tickets at {rpm}/min, provider down {down_secs:g} s "
              f"after {KILL_AFTER:.0%} of them")
    provider = Provider(free_port(), "--rpm", str(rpm), "--burst_secs", "1", *_latency_flags())
    provider.start()
    job = None
    try:
        job = Job.start(label, ["--input", str(bench.tickets(tickets)), "--base_url",
                                provider.base_url, "--requests_per_minute", str(rpm)],
                        bench.workdir, src=src)
        deadline = time.monotonic() + 600
        while provider.stats()["successful_completions"] < KILL_AFTER * tickets:
            if job.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the job ended or stalled before the outage "
                                   f"({job.log_path.read_text()[-1500:]})")
            time.sleep(0.2)
        down_at = time.monotonic()
        provider.stop()
        time.sleep(max(0.0, down_secs - (time.monotonic() - down_at)))
        provider.start()
        down = time.monotonic() - down_at
        summary = job.finish(timeout=3600)
        provider.stop()
    finally:
        if job is not None:
            job.kill()
        provider.stop()
    requests = sum(life["requests"] for life in provider.lifetimes)
    bench.log(f"    {label}: down {down:.1f} s, {summary['succeeded']} ok, "
              f"{summary['dead_lettered']} dead letters, {summary['retries']} retries, "
              f"outage_secs {summary.get('outage_secs')}, {job.wall_s:.0f} s wall")
    _remove_tree(job.output)
    return {f"{prefix}outage_dead_letters": summary["dead_lettered"],
            # Older commits have no breaker and no outage_secs in their summary.
            f"{prefix}outage_secs": summary.get("outage_secs"),
            f"{prefix}outage_retries": summary["retries"],
            f"{prefix}outage_down_secs": round(down, 1),
            f"details_{prefix}outage": {
                "tickets": tickets, "rpm": rpm, "succeeded": summary["succeeded"],
                "dead_letter_reasons": summary["dead_letter_reasons"],
                "requests_at_provider": requests,
                "requests_by_pipeline": summary["requests"],
                "server_errors": summary["server_errors"], "timeouts": summary["timeouts"],
                "ledger_balanced": summary["ledger_balanced"],
                "job_wall_s": round(job.wall_s, 1)}}
