"""``--max_concurrency auto`` (transforms/limits/concurrency.py) and the GPU-like simulator
(simulator/gpu.py): the controller against a fake server in simulated time, the GPU model's knee
in simulated time, and one small pipeline run against ``--server_model gpu``.
"""

import asyncio
import random

import pytest

from simulator.config import SimulatorConfig
from simulator.gpu import GpuModel, GpuSettings
from tests.adaptive_fakes import Driver, KneeServer
from transforms.limits.concurrency import (DROP, GROW, HOLD, IGNORE, OK, PROBE,
                                           AdaptiveConcurrency, AdaptiveSettings,
                                           ConcurrencyGate, concurrency_setting)

EXAMPLES_TICKETS = "examples/tickets.jsonl"


def controller(settings=AdaptiveSettings()):
    return lambda clock: AdaptiveConcurrency(settings, clock=clock, rng=random.Random(1))


# ---- the controller ------------------------------------------------------------------------

def test_grows_fast_from_a_cold_start_and_holds_at_the_knee():
    server = KneeServer(knee=48, queue=64)
    run = Driver(server, controller())
    assert run.controller.limit == 4  # starts small
    run.run(15)
    assert run.controller.state == HOLD
    assert run.answers_per_sec(10, 15) >= 0.9 * server.peak_answers_per_sec()
    run.run(45)
    limits = [limit for t, limit in run.limits if t >= 20 and run.controller.state != PROBE]
    held = sorted(limits)[len(limits) // 2]
    assert 48 <= held <= 64, held  # at the knee, a little queue, far below knee + queue
    assert run.drops == 0
    assert run.answers_per_sec(20, 60) >= 0.95 * server.peak_answers_per_sec()
    # Latency stays within the tolerance-and-headroom band of the no-load latency.
    no_load = server.latency(1, 130)
    late = sorted(latency for t, latency in run.answers if t >= 20)
    assert late[len(late) // 2] <= 1.5 * no_load


def test_a_smaller_knee_is_found_too():
    server = KneeServer(knee=12, queue=16)
    run = Driver(server, controller())
    run.run(60)
    assert 12 <= run.controller.limit <= 18, run.controller.limit
    assert run.answers_per_sec(20, 60) >= 0.9 * server.peak_answers_per_sec()


def test_backs_off_on_503s_once_per_round():
    clock = [0.0]
    c = AdaptiveConcurrency(AdaptiveSettings(), clock=lambda: clock[0])
    c._limit, c.state, c.baseline = 40.0, HOLD, 0.01
    c._new_round(0.0)
    clock[0] = 1.0
    stamps = [c.on_sent() for _ in range(10)]
    clock[0] = 2.0
    for stamp in stamps:  # a burst of 503s sent under the same limit: one cut
        c.on_done(stamp, 0.01, 0, DROP)
    assert c.limit == 30 and c.drops == 10
    stamps = [c.on_sent() for _ in range(2)]
    clock[0] = 3.0
    c.on_done(stamps[0], 30.0, 0, DROP)  # a lone timeout after the cut: a fault, no cut
    assert c.limit == 30
    c.on_done(stamps[1], 30.0, 0, DROP)  # a second one in the round: cut again
    assert c.limit == 22


def test_backs_off_on_timeouts_from_a_server_that_stalls():
    server = KneeServer(knee=48, queue=1000)
    run = Driver(server, controller())
    run.run(30)
    before = run.controller.limit
    server.queue = 0  # the server now rejects everything over its batch
    server.knee = 16
    run.run(30)
    assert run.controller.limit < before
    assert run.controller.limit <= 24
    assert run.controller.drops > 0


def test_reprobes_the_no_load_latency_and_follows_a_slower_server():
    server = KneeServer(knee=48, queue=64)
    settings = AdaptiveSettings(probe_interval_secs=20.0)
    run = Driver(server, controller(settings))
    run.run(15)
    first = run.controller.baseline
    states = set()
    server.secs_per_token *= 2  # the model got slower (a longer context, another model)
    for _ in range(60):
        run.run(1)
        states.add(run.controller.state)
    assert PROBE in states
    assert run.controller.probes >= 2
    assert run.controller.baseline == pytest.approx(2 * first, rel=0.25)
    # With the new baseline the limit is back near the knee (not cut for "high" latency).
    assert run.controller.limit >= 40


def test_does_not_grow_while_rate_limits_hold_requests_back():
    clock = [0.0]
    c = AdaptiveConcurrency(AdaptiveSettings(), clock=lambda: clock[0])
    # Startup: 4 answers make the baseline; then at most 3 in flight at a time (a rate limit).
    for _ in range(200):
        stamps = [c.on_sent() for _ in range(3)]
        clock[0] += 1.0
        for stamp in stamps:
            c.on_done(stamp, 1.0, 100, OK)
    assert c.state in (GROW, HOLD)
    assert c.limit <= 8


def test_ignored_outcomes_move_nothing():
    c = AdaptiveConcurrency(AdaptiveSettings(), clock=lambda: 0.0)
    for _ in range(50):
        c.on_done(c.on_sent(), 5.0, 0, IGNORE)
    assert c.limit == 4 and c.drops == 0 and c.in_flight == 0


def test_figure_has_the_summary_keys():
    run = Driver(KneeServer(), controller())
    run.run(30)
    figure = run.controller.figure()
    assert figure["mode"] == "auto"
    assert {"final", "min", "max", "p50", "drops", "probes", "by_time"} <= set(figure)
    assert figure["min"] == 4 and figure["max"] >= figure["p50"] >= figure["min"]
    assert figure["by_time"][0]["limit"] == 4 and figure["by_time"][-1]["t"] > 10


@pytest.mark.parametrize("value, expected", [
    ("32", (32, None)), ("auto", (256, AdaptiveSettings())),
    ("auto:512", (512, AdaptiveSettings(max_limit=512))),
    ("auto:2", (2, AdaptiveSettings(max_limit=2, initial=2, min_limit=2)))])
def test_concurrency_setting(value, expected):
    assert concurrency_setting(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "auto:0", "many", "auto:x", "1.5"])
def test_concurrency_setting_rejects(value):
    with pytest.raises(ValueError, match="positive integer, 'auto' or 'auto:MAX'"):
        concurrency_setting(value)


def test_gate_follows_the_limit():
    async def main():
        c = AdaptiveConcurrency(AdaptiveSettings(), clock=lambda: 0.0)
        gate = ConcurrencyGate(c)
        entered, release = [], [asyncio.Event() for _ in range(10)]

        async def one(i):
            async with gate:
                entered.append(i)
                await release[i].wait()
        tasks = [asyncio.ensure_future(one(i)) for i in range(10)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert entered == [0, 1, 2, 3]  # the limit, in order
        c._limit = 8.0  # the controller grew it: the next release lets 5 more in
        release[0].set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert entered == list(range(9))
        for event in release:
            event.set()
        await asyncio.gather(*tasks)
        assert gate._in_use == 0 and entered == list(range(10))
    asyncio.run(main())


# ---- the GPU-like server -------------------------------------------------------------------

def _gpu_run(concurrency, settings=GpuSettings(), rounds=3, tokens=100, prompt=150):
    """``concurrency`` clients, each sending ``rounds`` requests one after another, in simulated
    time. Returns (answers per second, mean latency, rejected)."""
    now = [0.0]

    async def sleep(secs):
        now[0] += secs
        await asyncio.sleep(0)

    async def main():
        gpu = GpuModel(settings, clock=lambda: now[0], sleep=sleep)
        latencies, rejected = [], 0

        async def client():
            nonlocal rejected
            for _ in range(rounds):
                start = now[0]
                if await gpu.generate(prompt, tokens):
                    latencies.append(now[0] - start)
                else:
                    rejected += 1
                    await sleep(0.001)
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return len(latencies) / now[0], sum(latencies) / len(latencies), rejected, gpu
    return asyncio.run(main())


def test_gpu_throughput_has_a_knee_at_max_batch():
    rates = {n: _gpu_run(n)[:2] for n in (1, 8, 24, 48, 96, 112)}
    no_load = rates[1][1]
    # Below the knee: throughput grows almost in proportion, latency barely moves.
    assert rates[24][0] > 2.6 * rates[8][0]
    assert rates[48][0] > 1.7 * rates[24][0]
    assert rates[48][1] < 1.25 * no_load
    # Past it: flat throughput, latency grows with the queue.
    assert rates[96][0] == pytest.approx(rates[48][0], rel=0.1)
    assert rates[96][1] > 1.8 * rates[48][1]


def test_gpu_rejects_when_the_queue_is_full_and_measures_its_peak():
    settings = GpuSettings(max_batch=8, queue=4)
    _, _, rejected, gpu = _gpu_run(20, settings, rounds=1)
    assert rejected == 8 and gpu.rejected == 8  # 20 - (8 running + 4 waiting)
    rate, _, _, gpu = _gpu_run(48, rounds=40, tokens=20)
    snapshot = gpu.snapshot()
    # The peak is measured over the full-batch steps: the capacity at the knee (here every
    # 20 steps the whole batch is prefilled again: 48 prompts of 150 tokens).
    capacity = 48 * 20 / (20 * GpuSettings().step_secs(48) + GpuSettings().step_secs(0, 48 * 150)
                          - GpuSettings().step_secs(0))
    assert snapshot["peak_tokens_per_sec"] == pytest.approx(capacity, rel=0.1)
    assert snapshot["peak_requests_per_sec"] == pytest.approx(rate, rel=0.15)
    assert snapshot["peak_batch"] == 48 and snapshot["rejected_queue_full"] == 0


def test_server_model_flag_is_validated():
    assert SimulatorConfig(server_model="gpu").gpu_max_batch == 48
    with pytest.raises(ValueError, match="server_model"):
        SimulatorConfig(server_model="tpu")


# ---- end to end ----------------------------------------------------------------------------

def test_pipeline_with_auto_concurrency_against_the_gpu_server(run_pipeline):
    """``--max_concurrency auto`` against ``--server_model gpu``: every ticket answered, the
    ledger balanced, the figure in summary.json and in the report."""
    run = run_pipeline("--input", EXAMPLES_TICKETS, "--simulate", "--simulator_flags",
                       "--server_model gpu --gpu_decode_ms 2 --gpu_max_batch 16 --gpu_queue 32",
                       "--max_concurrency", "auto")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["read"] == summary["succeeded"] == 300
    assert summary["ledger_balanced"] is True
    figure = summary["concurrency"]
    assert figure["mode"] == "auto" and figure["ceiling"] == 256
    assert figure["min"] == 4 and figure["max"] >= 16  # it grew past the server's batch
    assert figure["probes"] >= 1 and figure["baseline_ms_per_token"] > 0
    assert figure["by_time"] and figure["by_time"][0]["limit"] == 4
    assert summary["simulator"]["gpu"]["peak_batch"] == 16
    assert f"auto: {figure['final']} at the end" in run.stdout
    report = (run.output / "report.html").read_text()
    assert 'aria-label="concurrency"' in report


def test_bad_max_concurrency_is_a_usage_error(run_pipeline):
    run = run_pipeline("--input", EXAMPLES_TICKETS, "--simulate", "--max_concurrency", "lots")
    assert run.returncode == 2
    assert "--max_concurrency must be a positive integer, 'auto' or 'auto:MAX'" in run.stderr


def test_endpoints_file_auto_gets_a_controller_per_endpoint(run_pipeline, simulator_factory,
                                                            tmp_path):
    """``max_concurrency: auto`` in an ``--endpoints`` file: that endpoint's own controller,
    its figure in the summary beside the fixed one's."""
    gpu = simulator_factory(server_model="gpu", gpu_decode_ms=2.0, gpu_max_batch=8,
                            gpu_queue=16)
    fixed = simulator_factory(latency_median_ms=50)
    path = tmp_path / "endpoints.yaml"
    path.write_text(f"endpoints:\n  - name: gpu\n    base_url: {gpu.base_url}\n"
                    f"    max_concurrency: auto\n  - name: api\n    base_url: {fixed.base_url}\n"
                    f"    max_concurrency: 4\n")
    run = run_pipeline("--input", EXAMPLES_TICKETS, "--endpoints", str(path))
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["succeeded"] == 300 and summary["ledger_balanced"] is True
    by_endpoint = summary["concurrency"]["by_endpoint"]
    assert by_endpoint["api"] == {"mode": "fixed", "final": 4}
    assert by_endpoint["gpu"]["mode"] == "auto" and by_endpoint["gpu"]["by_time"]
    assert summary["concurrency"]["mode"] == "auto"  # the first auto endpoint's, for the plot
