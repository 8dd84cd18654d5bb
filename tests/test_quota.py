"""The shared quota: GCRA arithmetic with an injected clock, then the limiter and the budget
against a real ``redis-server`` through the real client (killed and restarted mid-run)."""

import asyncio
import logging
import random
import threading
import time

import pytest

from tests.redis_server import RedisServer, free_port
from transforms.limits.quota import SharedRateLimiter, connect, quota_key
from transforms.limits.shared_budget import SharedBudget
from transforms.limits.quota_scripts import gcra_step
from transforms.limits.limiter import AdaptiveRateLimiter
from transforms.llm.providers.openai import limit_headers


def max_in_window(times, window=1.0):
    """The most timestamps in any half-open window [t, t + window) that starts at one of them."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def limiter(url, name, rps, tps, local_rps=None, local_tps=None, **kwargs):
    fallback = AdaptiveRateLimiter(local_rps if local_rps is not None else rps / 4,
                                   local_tps if local_tps is not None else tps / 4)
    return SharedRateLimiter(connect(url), name, rps, tps, fallback, **kwargs)


async def tat_ahead_us(client, key):
    """How far a TAT key is ahead of Redis's clock, in microseconds (0 if absent)."""
    value = await client.get(key)
    secs, micros = await client.time()
    return max(0.0, float(value) - (secs * 1e6 + micros)) if value else 0.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


# --- the pure arithmetic ------------------------------------------------------------------------

def test_gcra_paces_strictly_with_one_interval_of_tolerance():
    now, tat, times = 0.0, None, []
    while now < 10.0:
        wait, (tat,) = gcra_step([tat], [0.1], tau=0.1, now=now)
        if wait > 0:
            now += wait
        else:
            times.append(now)
    assert len(times) == pytest.approx(100, abs=1)
    assert max_in_window(times, 1.0 - 1e-9) <= 10           # (float sums of 0.1 drift)
    assert min(b - a for a, b in zip(times, times[1:])) == pytest.approx(0.1)


def test_gcra_slack_keeps_late_wakeups_without_bursting_after_idle():
    """Every wake-up 2 ms late on a 50 ms interval: strict pacing loses it, slack keeps it."""
    rates = {}
    for slack in (0.0, 0.5):
        now, tat, times = 0.0, None, []
        while now < 20.0:
            wait, (tat,) = gcra_step([tat], [0.05], tau=0.05, now=now, slack=slack)
            if wait > 0:
                now += wait + 0.002
            else:
                times.append(now)
        rates[slack] = len(times) / 20.0
        assert max_in_window(times) <= 20 + (slack > 0)
    assert rates[0.0] < 19.3 and rates[0.5] >= 19.9
    # Idle for longer than the slack: the limit restarts from now, one request, no catch-up.
    wait, (tat,) = gcra_step([10.0], [0.05], tau=0.05, now=10.1, slack=0.5)
    assert wait == 0 and tat == pytest.approx(10.15)
    assert gcra_step([tat], [0.05], tau=0.05, now=10.1, slack=0.5)[0] == pytest.approx(0.05)


def test_gcra_charges_every_limit_or_none_and_big_costs_go_into_debt():
    # requests: 0.1 s each; tokens: 3 s for this request (larger than tau: debt).
    wait, tats = gcra_step([None, None], [0.1, 3.0], tau=0.1, now=5.0)
    assert wait == 0 and tats == [5.1, 8.0]
    wait, after = gcra_step(tats, [0.1, 3.0], tau=0.1, now=5.5)
    assert wait == pytest.approx(2.5) and after == tats          # tokens refuse: nothing charged
    wait, after = gcra_step(tats, [0.1, 3.0], tau=0.1, now=8.0)  # caught up: admitted
    assert wait == 0 and after == [8.1, 11.0]
    assert gcra_step([None, None], [0, 0], tau=0.0, now=1.0) == (0.0, [None, None])


def test_quota_key_names_endpoint_and_model_never_the_key():
    secret = "sk-proj-" + "Zq8xW2" * 8
    name = quota_key("https://user:hunter2@API.Example.com:8443/v1/", "gpt-x", secret)
    assert name.startswith("api.example.com:8443/v1|gpt-x|")
    for i in range(len(secret) - 6):
        assert secret[i:i + 6] not in name
    assert "hunter2" not in name and "{" not in name and "}" not in name
    assert name == quota_key("https://API.example.com:8443/v1", "gpt-x", secret)
    assert name != quota_key("https://api.example.com:8443/v1", "gpt-x", secret + "1")
    assert name != quota_key("https://api.example.com:8443/v1", "gpt-y", secret)
    assert quota_key(None, "m {x}", None) == "default|m__x_|nokey"


# --- the shared limiter on a real Redis ---------------------------------------------------------

def test_five_workers_share_one_quota_paced_per_second(redis_url):
    """3 workers on this loop + 2 in threads, each with its own client, share 600 RPM for 3 s."""
    rps, secs, admitted, on_redis_clock = 10.0, 3.0, [], []
    start = time.monotonic() + 0.3

    async def worker():
        lim = limiter(redis_url, "pace", rps, 0)
        await asyncio.sleep(start - time.monotonic())
        while True:
            await lim.acquire(100)
            now = time.monotonic()
            if now >= start + secs:
                break
            admitted.append(now)
            on_redis_clock.append(lim.last_admitted_at)
        await lim.client.aclose()
        return lim

    async def main():
        return await asyncio.gather(*[worker() for _ in range(3)])

    threads = [threading.Thread(target=lambda: asyncio.run(worker())) for _ in range(2)]
    for thread in threads:
        thread.start()
    limiters = asyncio.run(main())
    for thread in threads:
        thread.join()
    utilisation = len(admitted) / (rps * secs)
    print(f"pacing: {len(admitted)} admitted in {secs} s at {rps}/s: utilisation "
          f"{utilisation:.3f}, busiest second {max_in_window(on_redis_clock)} on Redis's clock, "
          f"{max_in_window(admitted)} on the workers'")
    assert len(admitted) <= rps * secs + 2
    assert utilisation >= 0.95
    assert max_in_window(on_redis_clock) <= rps + 1
    assert max_in_window(admitted) <= rps + 2                # + the workers' scheduling jitter
    assert all(lim.shared_admissions > 0 and not lim.using_fallback for lim in limiters)


def test_one_script_charges_both_limits_or_neither(redis_url):
    async def main():
        tok = limiter(redis_url, "atomic-tok", 100, 1000)   # the token limit binds
        assert await tok.try_acquire(500) == 0
        before = await tok.client.get(tok.keys["requests"])
        assert before and await tok.client.get(tok.keys["tokens"])
        wait = await tok.try_acquire(500)
        assert 0.3 < wait <= 0.5
        assert await tok.client.get(tok.keys["requests"]) == before
        req = limiter(redis_url, "atomic-req", 1, 1000)     # the request limit binds
        assert await req.try_acquire(10) == 0
        before = await req.client.get(req.keys["tokens"])
        assert 0.8 < await req.try_acquire(10) <= 1.0
        assert await req.client.get(req.keys["tokens"]) == before
        for lim in (tok, req):
            await lim.client.aclose()

    asyncio.run(main())


def test_reconcile_credits_and_charges_the_token_limit(redis_url):
    async def main():
        lim = limiter(redis_url, "reconcile", 0, 1000)       # 1 ms per token
        key = lim.keys["tokens"]
        assert await lim.try_acquire(2000) == 0
        ahead = await tat_ahead_us(lim.client, key)
        assert ahead == pytest.approx(2e6, abs=1e5)
        await lim.acorrect(1500)                            # over-estimated: 1.5 s comes back
        assert await tat_ahead_us(lim.client, key) == pytest.approx(ahead - 1.5e6, abs=1e5)
        await lim.acorrect(-500)                            # under-estimated: charged
        assert await tat_ahead_us(lim.client, key) == pytest.approx(ahead - 1.0e6, abs=1e5)
        await lim.acorrect(5000)                            # more than ahead: caught up
        assert await lim.client.get(key) is None
        assert await lim.try_acquire(50) == 0
        await lim.client.aclose()

    asyncio.run(main())


def test_a_429_seen_by_one_worker_pauses_every_worker(redis_url):
    async def main():
        a, b = limiter(redis_url, "pause", 100, 0), limiter(redis_url, "pause", 100, 0)
        assert await b.try_acquire(1) == 0
        a.on_rate_limited(1.0)
        await a.flush()
        assert 0.8 < await b.try_acquire(1) <= 1.0
        started = time.monotonic()
        await b.acquire(1)
        assert time.monotonic() - started >= 0.8
        a.observe_limits(limit_headers({"x-ratelimit-remaining-tokens": "0",
                                         "x-ratelimit-reset-tokens": "1.5s"}))
        await a.flush()
        assert 1.3 < await b.try_acquire(1) <= 1.5
        for lim in (a, b):
            await lim.client.aclose()

    asyncio.run(main())


# --- the shared budget --------------------------------------------------------------------------

def test_budget_is_never_overspent_by_concurrent_workers(redis_url):
    rng = random.Random(7)
    spent, flying = [], [0]

    async def task(budget):
        while True:
            if not await budget.reserve(0.05):
                if flying[0] == 0:
                    return
                await asyncio.sleep(0.01)
                continue
            flying[0] += 1
            await asyncio.sleep(rng.uniform(0, 0.01))
            cost = rng.uniform(0.01, 0.05)
            spent.append(cost)
            await budget.settle(0.05, cost)
            flying[0] -= 1

    async def main():
        budgets = [SharedBudget(connect(redis_url), "job-1", 1.0, 0.25) for _ in range(3)]
        await asyncio.gather(*[task(b) for b in budgets for _ in range(8)])
        client = budgets[0].client
        ledger = int(await client.get(budgets[0].keys[0]))
        held = await client.hvals(budgets[0].keys[1])
        for b in budgets:
            await b.client.aclose()
        return ledger, held

    ledger, held = asyncio.run(main())
    assert 0.95 <= sum(spent) <= 1.0
    assert ledger == pytest.approx(sum(spent) * 1e6, abs=len(spent))   # rounded up per spend
    assert held == []


def test_reservations_of_a_dead_worker_lapse_with_its_lease(redis_url):
    async def main():
        dead = SharedBudget(connect(redis_url), "job-2", 1.0, 0.5, lease_secs=0.3)
        live = SharedBudget(connect(redis_url), "job-2", 1.0, 0.5)
        assert await dead.reserve(0.9)                      # and never settles
        assert not await live.reserve(0.5)
        await asyncio.sleep(0.4)
        assert await live.reserve(0.5)
        for b in (dead, live):
            await b.client.aclose()

    asyncio.run(main())


# --- Redis unreachable --------------------------------------------------------------------------

def test_unreachable_at_start_runs_on_the_local_share(caplog):
    caplog.set_level(logging.WARNING, logger="transforms.limits.quota")
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def main():
        lim = limiter(url, "nowhere", 20, 0, local_rps=5, probe_secs=10)
        times = []
        for _ in range(6):
            await lim.acquire(1)
            times.append(time.monotonic())
        budget = SharedBudget(connect(url), "job-3", 1.0, 0.25)
        results = [await budget.reserve(0.2), await budget.reserve(0.1)]
        return lim, times, budget, results

    lim, times, budget, results = asyncio.run(main())
    assert lim.using_fallback and lim.fallback_events == 1 and lim.local_admissions == 6
    assert times[-1] - times[0] >= 0.9                      # 5/s locally, not 20/s
    assert results == [True, False] and budget.fallback_events == 1
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert all("redis" in r.getMessage().lower() for r in caplog.records)


def test_redis_killed_mid_run_falls_back_then_returns(tmp_path, caplog):
    """Shared 20/s; the worker's local share 5/s; Redis dies for ~1 s and comes back empty."""
    caplog.set_level(logging.WARNING, logger="transforms.limits.quota")
    server = RedisServer(tmp_path).start()
    times, phases = [], {}

    async def run_for(lim, secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            await lim.acquire(1)
            times.append(time.monotonic())

    async def main():
        lim = limiter(server.url, "outage", 20, 0, local_rps=5, probe_secs=0.3)
        budget = SharedBudget(connect(server.url), "job-4", 1.0, 0.5, probe_secs=0.3)
        assert await budget.reserve(0.2)
        await budget.settle(0.2, 0.1)
        await run_for(lim, 0.5)
        phases["shared"] = len(times)
        server.stop()
        await run_for(lim, 1.0)
        phases["outage"] = len(times) - phases["shared"]
        assert lim.using_fallback and budget.seen_spent_usd == pytest.approx(0.1)
        assert await budget.reserve(0.2)                    # local: 0.5 x (1.0 - 0.1) allowed
        await budget.settle(0.2, 0.05)
        assert not await budget.reserve(0.41)               # 0.05 + 0.41 > 0.45
        server.start()
        back = time.monotonic()
        await run_for(lim, 1.5)
        assert not lim.using_fallback
        phases["grace"] = sum(1 for t in times if back <= t < back + 0.6)
        assert await budget.reserve(0.01) and not budget.using_fallback
        ledger = int(await budget.client.get(budget.keys[0]))  # rebuilt from the worker's spend
        assert await lim.client.get(lim.keys["requests"])
        for client in (lim.client, budget.client):
            await client.aclose()
        return lim, budget, ledger

    try:
        lim, budget, ledger = asyncio.run(main())
    finally:
        server.stop()
    print(f"outage: phases {phases}, fallback_secs {lim.fallback_secs:.2f}, "
          f"busiest second {max_in_window(times)}")
    assert lim.fallback_events == 1 and budget.fallback_events == 1
    assert 0.9 <= lim.fallback_secs <= 3.0
    assert phases["shared"] >= 8 and phases["outage"] <= 7 and phases["grace"] <= 5
    assert max_in_window(times) <= 21
    assert ledger == pytest.approx(150_000, abs=2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2                               # one for the limiter, one for budget


def test_a_rate_of_fractional_microseconds_admits(redis_url):
    # 1e6 / 19.6 us per request is no whole number: float rounding in the script on Redis's
    # ~1.8e15 us clock must not refuse a request forever (it once did).
    async def main():
        lim = limiter(redis_url, "fractional", 19.6, 0.0, slack=0.0)
        assert await lim.try_acquire(300) == 0.0
        waited = await asyncio.wait_for(lim.acquire(300), 2)
        assert 0.0 < waited < 0.2
    asyncio.run(main())
