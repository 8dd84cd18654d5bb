"""Prompt caching: cache read/write prices, the cache figures of a run, --prompt_prefix_file,
OpenAI's prompt_cache_key and the simulator's OpenAI prompt cache."""

import asyncio
import dataclasses
import json

import pytest

from pipeline import caching
from pipeline.estimate import EstimateInputs, estimate, format_estimate
from pipeline.projection import Settings, project, projection_rows
from simulator.openai_cache import OpenAIPromptCache, cached_tokens_for
from transforms.llm.providers.anthropic import parse_message
from transforms.llm.providers.openai import parse_completion, prompt_cache_key
from transforms.pricing import Price, PricingError, load_pricing
from transforms.prompts import PromptRenderer
from transforms.records import Ticket
from transforms.validate import FieldMapping
from tests.llm_fakes import FakeCaller, FakeClock, llm_config

SONNET = Price(input=3.0, cached_input=0.3, output=15.0, cache_write_5m=3.75, cache_write_1h=6.0)
# About 2,000 tokens (the simulator and the pipeline count 4 characters a token).
MANUAL = "Refunds within 30 days need the order number; escalate fraud to tier 2. " * 110


# ---- prices ------------------------------------------------------------------------------------

def test_cost_splits_reads_writes_by_ttl_and_plain_input():
    # 10,000 prompt tokens: 6,000 read, 2,000 written, 2,000 plain; 1,000 completion.
    plain, reads, writes_5m, out = 2000 * 3.0, 6000 * 0.3, 2000 * 3.75, 1000 * 15.0
    assert SONNET.cost(10_000, 1000, 6000, 2000) == pytest.approx(
        (plain + reads + writes_5m + out) / 1e6)
    assert SONNET.cost(10_000, 1000, 6000, 2000, ttl="1h") == pytest.approx(
        (plain + reads + 2000 * 6.0 + out) / 1e6)
    # Reads and writes never exceed the prompt; without write prices a write costs input.
    assert SONNET.cost(100, 0, 500, 500) == pytest.approx(100 * 0.3 / 1e6)
    assert Price(1.0, 0.5, 2.0).cost(1000, 0, 0, 1000) == pytest.approx(1000 * 1.0 / 1e6)


def test_saving_is_plain_input_minus_what_the_cached_tokens_cost():
    assert SONNET.cache_saving(6000, 0) == pytest.approx(6000 * 2.7 / 1e6)
    # A write alone costs more than plain input: a negative saving.
    assert SONNET.cache_saving(0, 2000) == pytest.approx(-2000 * 0.75 / 1e6)
    assert SONNET.cache_saving(0, 2000, "1h") == pytest.approx(-2000 * 3.0 / 1e6)
    assert SONNET.scaled(0.5).cache_saving(6000, 2000) == pytest.approx(
        SONNET.cache_saving(6000, 2000) / 2)


def test_shipped_prices_carry_cache_writes_and_reads_online_and_batch():
    pricing = load_pricing(None)
    for name in ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"):
        price = pricing.lookup(name)[0]
        assert price.write_price("5m") == pytest.approx(1.25 * price.input), name
        assert price.write_price("1h") == pytest.approx(2.0 * price.input), name
        assert price.cached_input == pytest.approx(0.1 * price.input), name
        assert pricing.lookup_batch(name)[0] == price.scaled(0.5), name
    for name in ("gpt-4o-mini", "gpt-4.1", "gemini-2.5-flash", "gemini-2.5-pro"):
        price = pricing.lookup(name)[0]
        assert price.write_price("5m") == price.write_price("1h") == price.input, name
        assert 0 < price.cached_input < price.input, name


def test_pricing_files_with_and_without_write_prices(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"models": {"m": {"input": 2, "output": 4, "cache_write_5m": 2.5}}}')
    price = load_pricing(str(path)).lookup("m")[0]
    assert (price.write_price("5m"), price.write_price("1h"), price.cached_input) == (2.5, 2, 2)
    path.write_text('{"models": {"m": {"input": 2, "output": 4, "cache_write_1h": -1}}}')
    with pytest.raises(PricingError, match="negative"):
        load_pricing(str(path))
    path.write_text('{"models": {"m": {"input": 2, "output": 4, "cache_write_1h": "x"}}}')
    with pytest.raises(PricingError, match="cache_write_1h"):
        load_pricing(str(path))


# ---- usage -------------------------------------------------------------------------------------

def test_usage_of_each_provider_carries_cache_reads_and_writes():
    anthropic = parse_message(json.dumps({
        "type": "message", "content": [{"type": "text", "text": "ok"}], "model": "m",
        "usage": {"input_tokens": 50, "output_tokens": 5, "cache_read_input_tokens": 2000,
                  "cache_creation_input_tokens": 300}}).encode())
    assert (anthropic.prompt_tokens, anthropic.cache_read_tokens,
            anthropic.cache_write_tokens) == (2350, 2000, 300)
    openai = parse_completion(json.dumps({
        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2100, "completion_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1920}}}).encode())
    assert (openai.cache_read_tokens, openai.cache_write_tokens) == (1920, 0)


def test_prompt_cache_key_is_a_stable_hash_of_the_static_prefix():
    def params(system, user, model="gpt-4o-mini"):
        return {"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "system", "content": system},
                                             {"role": "user", "content": user}]}
    key = prompt_cache_key(params(MANUAL, "ticket 1"))
    assert key and key.startswith("tf-")
    assert prompt_cache_key(params(MANUAL, "ticket 2")) == key  # the ticket is not the prefix
    assert prompt_cache_key(params(MANUAL + "v2", "ticket 1")) != key
    assert prompt_cache_key(params(MANUAL, "ticket 1", model="gpt-4o")) != key
    assert prompt_cache_key(params("short", "ticket 1")) is None  # too short to be cached


# ---- the simulator's OpenAI cache --------------------------------------------------------------

def test_openai_cache_counts_1024_then_128_token_steps():
    assert [cached_tokens_for(n) for n in (0, 1023, 1024, 1151, 1152, 2000)] == [
        0, 0, 1024, 1024, 1152, 1920]


def test_openai_cache_hits_a_repeated_prefix_within_its_ttl_and_key():
    now = [0.0]
    cache = OpenAIPromptCache(lambda: now[0])
    messages = [{"role": "system", "content": MANUAL}, {"role": "user", "content": "t1"}]
    cached, keys = cache.lookup("gpt-4o-mini", "k", messages)
    assert cached == 0 and keys
    cache.store(keys)
    other = [messages[0], {"role": "user", "content": "another ticket"}]
    assert cache.lookup("gpt-4o-mini", "k", other)[0] == cached_tokens_for(
        (len(MANUAL) + 3) // 4 + 3)
    assert cache.lookup("gpt-4o-mini", "other-key", other)[0] == 0
    assert cache.lookup("gpt-4o", "k", other)[0] == 0
    now[0] = 301.0
    assert cache.lookup("gpt-4o-mini", "k", other)[0] == 0


# ---- the prefix file, estimate and projection --------------------------------------------------

def test_the_prefix_goes_after_the_system_prompt_and_before_the_ticket():
    ticket = Ticket(id="1", body="It broke.", subject="", fields={"id": "1", "body": "It broke."})
    messages = PromptRenderer(None, "Be brief.", prefix=MANUAL).render(ticket)
    assert [m["role"] for m in messages] == ["system", "system", "user"]
    assert messages[0]["content"] == "Be brief." and messages[1]["content"] == MANUAL.strip()
    template = "{% block system %}Triage.{% endblock %}{% block user %}{{ body }}{% endblock %}"
    messages = PromptRenderer(template, "", prefix=MANUAL).render(ticket)
    assert [m["content"] for m in messages] == ["Triage.", MANUAL.strip(), "It broke."]


def test_forecast_writes_once_and_reads_after():
    anthropic = caching.forecast(2000, 100, "anthropic", "claude-sonnet-4-5", True)
    assert (anthropic.write_tokens, anthropic.read_tokens) == (2000, 99 * 2000)
    assert caching.forecast(2000, 100, "anthropic", "claude-haiku-4-5", True).read_tokens == 0
    assert caching.forecast(2000, 100, "anthropic", "claude-sonnet-4-5", False).read_tokens == 0
    openai = caching.forecast(2000, 100, "openai", "gpt-4o-mini", False)
    assert (openai.write_tokens, openai.read_tokens) == (0, 99 * 1920)


def _estimate(tmp_path, **overrides):
    tickets = tmp_path / "t.jsonl"
    tickets.write_text("".join(json.dumps({"id": str(i), "body": f"Order {i} broke."}) + "\n"
                               for i in range(50)))
    inputs = dict(pattern=str(tickets), input_format="jsonl", fields=FieldMapping(),
                  system_prompt="Be brief.", model="claude-sonnet-4-5", max_tokens=100,
                  pricing=load_pricing(None), tokens_per_minute=60_000,
                  prompt_prefix=MANUAL, provider="anthropic")
    inputs.update(overrides)
    return estimate(EstimateInputs(**inputs))


def test_estimate_counts_the_prefix_and_prices_the_cache(tmp_path):
    on = _estimate(tmp_path)
    off = _estimate(tmp_path, prompt_cache=False)
    bare = _estimate(tmp_path, prompt_prefix=None)
    prefix = on["prefix_tokens"]
    assert prefix > 1900  # the document counts in every ticket's prompt
    assert on["prompt_tokens"] - bare["prompt_tokens"] == pytest.approx(
        50 * (prefix - bare["prefix_tokens"]), rel=0.01)
    assert (on["cache_write_tokens"], on["cache_read_tokens"]) == (prefix, 49 * prefix)
    assert off["cache_read_tokens"] == 0 and off["cache_saved_usd"] == 0
    assert on["cost_usd_expected"] < 0.5 * off["cost_usd_expected"]
    assert on["cost_usd_expected"] + on["cache_saved_usd"] == pytest.approx(
        off["cost_usd_expected"], abs=1e-5)
    # Anthropic's input-token limit does not count cache reads: a shorter bound.
    assert on["duration_bounds_secs"]["tokens_per_minute"] < \
        off["duration_bounds_secs"]["tokens_per_minute"] / 3
    text = format_estimate(on)
    assert "prompt cache" in text and caching.ASSUMPTION in text


def test_estimate_bounds_the_duration_by_the_input_and_output_limits_and_the_day(tmp_path):
    on = _estimate(tmp_path, tokens_per_minute=0, input_tokens_per_minute=60_000,
                   output_tokens_per_minute=3_000, requests_per_day=40)
    off = _estimate(tmp_path, tokens_per_minute=0, input_tokens_per_minute=60_000,
                    prompt_cache=False)
    bounds = on["duration_bounds_secs"]
    # Input: without the cache reads (Anthropic does not count them); output: what is expected.
    assert bounds["input_tokens_per_minute"] == pytest.approx(
        (on["prompt_tokens"] - on["cache_read_tokens"]) / 1000, abs=0.1)
    assert bounds["input_tokens_per_minute"] < off["duration_bounds_secs"][
        "input_tokens_per_minute"] / 3
    assert bounds["output_tokens_per_minute"] == pytest.approx(
        on["completion_tokens_expected"] / 50, abs=0.1)
    assert on["over_requests_per_day"] == 10 and off["over_requests_per_day"] == 0
    assert "daily_limit" in format_estimate(on)


def test_projection_scales_cache_reads_not_the_write():
    summary = {"parse_errors": 0, "duplicates": 0, "succeeded": 10, "dead_lettered": 0,
               "not_sampled": 90, "requests": 10, "prompt_tokens": 22_000,
               "completion_tokens": 500, "latency_ms_mean": 100, "wall_secs": 5, "read": 100,
               "cache_read_tokens": 18_000, "cache_write_tokens": 2000}
    settings = Settings(requests_per_minute=0, tokens_per_minute=0, max_tokens=100,
                        max_concurrency=4, worker_processes=1, price=SONNET,
                        batch_price=SONNET.scaled(0.5))
    p = project(summary, [0.01] * 10, settings)
    assert (p["cache_write_tokens"], p["cache_read_tokens"]) == (2000, 198_000)
    assert p["cache_saved_usd"] == pytest.approx(SONNET.cache_saving(198_000, 2000))
    assert any(name.strip() == "prompt cache" for name, _ in projection_rows(p))


# ---- end to end --------------------------------------------------------------------------------

def _tickets(tmp_path, n=12):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"id": f"A-{i}", "body": f"Order {i} broke."}) + "\n"
                            for i in range(n)))
    manual = tmp_path / "manual.md"
    manual.write_text(MANUAL)
    return path, manual


def test_a_prefix_file_that_is_missing_or_empty_stops_the_job(run_pipeline, tmp_path):
    tickets, _ = _tickets(tmp_path, 1)
    run = run_pipeline("--input", str(tickets), "--simulate", "--prompt_prefix_file",
                       str(tmp_path / "nope.md"))
    assert run.returncode == 2 and "--prompt_prefix_file" in run.stderr
    assert "Traceback" not in run.stderr
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    run = run_pipeline("--input", str(tickets), "--simulate", "--prompt_prefix_file", str(empty))
    assert run.returncode == 2 and "empty" in run.stderr


def test_anthropic_run_reports_cache_figures_and_costs_less_with_the_cache(
        run_pipeline, simulator_factory, tmp_path):
    sim = simulator_factory()
    tickets, manual = _tickets(tmp_path)
    common = ["--input", str(tickets), "--base_url", sim.base_url, "--model",
              "claude-sonnet-4-5", "--prompt_prefix_file", str(manual), "--max_concurrency", "1"]
    env = {"ANTHROPIC_API_KEY": "sk-ant-test"}
    on = run_pipeline(*common, env=env)
    assert on.returncode == 0, on.stderr
    summary = on.summary()
    assert summary["provider"] == "anthropic" and summary["succeeded"] == 12
    stats = sim.stats()
    assert summary["cache_write_tokens"] == stats["cache_creation_input_tokens"] > 2000
    assert summary["cache_read_tokens"] == stats["cache_read_input_tokens"] >= 11 * 2000
    price = load_pricing(None).lookup("claude-sonnet-4-5")[0]
    assert summary["cache_saved_usd"] == pytest.approx(price.cache_saving(
        summary["cache_read_tokens"], summary["cache_write_tokens"]), abs=1e-6)
    assert summary["cache_saved_usd"] > 0
    report = (on.output / "report.html").read_text()
    assert "Prompt cache" in report and "cache read tokens" in report
    assert "prompt cache" in on.stdout

    sim.reset()
    off = run_pipeline(*common, "--prompt_cache", "off", env=env)
    assert off.returncode == 0, off.stderr
    assert off.summary()["cache_read_tokens"] == off.summary()["cache_write_tokens"] == 0
    assert summary["cost_usd"] < 0.5 * off.summary()["cost_usd"]
    assert summary["cost_usd"] + summary["cache_saved_usd"] == pytest.approx(
        off.summary()["cost_usd"], abs=1e-5)


def test_openai_run_reports_cached_tokens_and_prices_them(run_pipeline, tmp_path):
    tickets, manual = _tickets(tmp_path)
    run = run_pipeline("--input", str(tickets), "--simulate", "--model", "gpt-4o-mini",
                       "--prompt_prefix_file", str(manual), "--max_concurrency", "1")
    assert run.returncode == 0, run.stderr
    summary = run.summary()
    assert summary["provider"] == "openai" and summary["succeeded"] == 12
    # The first request is plain input (no write surcharge at OpenAI), the others read 1,920+.
    assert summary["cache_write_tokens"] == 0
    assert summary["cache_read_tokens"] >= 11 * 1920
    assert summary["cache_read_tokens"] % 128 == 0
    price = load_pricing(None).lookup("gpt-4o-mini")[0]
    full = price.cost(summary["prompt_tokens"], summary["completion_tokens"])
    assert summary["cost_usd"] == pytest.approx(
        price.cost(summary["prompt_tokens"], summary["completion_tokens"],
                   summary["cache_read_tokens"]), abs=1e-6)
    assert summary["cost_usd"] + summary["cache_saved_usd"] == pytest.approx(full, abs=1e-6)


# ---- flow: cost, counters and the input-token limit --------------------------------------------

class _CachingCaller(FakeCaller):
    """Answers like Anthropic with a cached prefix: the first call writes it, later ones read."""

    async def call(self, params, timeout):
        completion, headers = await super().call(params, timeout)
        first = len(self.calls) == 1
        return dataclasses.replace(completion, prompt_tokens=2100,
                                   cached_tokens=0 if first else 2000,
                                   cache_write_tokens=2000 if first else 0), headers


def test_flow_prices_reads_and_writes_and_charges_the_limiter_without_reads():
    from transforms.llm.caller import Request
    from transforms.llm.flow import CallTrace, FlowControl
    from transforms.llm.stop import StopSignal

    clock = FakeClock()
    config = llm_config(provider="anthropic", price=SONNET, cache_ttl="5m",
                        worker_tokens_per_sec=100_000.0)
    flow = FlowControl(config, _CachingCaller(prompt_tokens=2100, completion_tokens=10),
                       StopSignal(), clock=clock, wall=lambda: 1.7e9, sleep=clock.sleep)
    charged = []
    acquire = flow._acquire  # pylint: disable=protected-access

    async def recording(tokens, *kinds):  # (and the input and output tokens)
        charged.append(tokens)
        return await acquire(tokens, *kinds)

    flow._acquire = recording  # what the limiter is charged, request by request

    async def go():
        await flow.start()
        traces = []
        for i in range(3):
            trace = CallTrace(clock() + 600, f"t{i}")
            await flow.answer(Request({"model": "m", "max_tokens": 50, "messages": [
                {"role": "system", "content": MANUAL}, {"role": "user", "content": f"t{i}"}]}),
                trace)
            traces.append(trace)
        return traces

    first, second, _ = [t.freeze() for t in asyncio.run(go())]
    assert (first.cache_write_tokens, first.cache_read_tokens) == (2000, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, 2000)
    assert second.cost_usd == pytest.approx(SONNET.cost(2100, 10, 2000, 0))
    assert first.cost_usd == pytest.approx(SONNET.cost(2100, 10, 0, 2000))
    assert second.cache_saved_usd == pytest.approx(SONNET.cache_saving(2000, 0))
    # Once an answer read the prefix from the cache, the next request is charged to the
    # input-token limit without those 2,000 tokens (the first read came with the second answer).
    assert charged[1] - charged[2] == pytest.approx(2000, abs=50)  # (the estimate learns too)
