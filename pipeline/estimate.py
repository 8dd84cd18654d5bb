"""``--estimate``: what a run would cost and how long it would take, without calling the provider.

The input is read and validated exactly as the pipeline does (same reader, same checks, the same
duplicate rule: :func:`transforms.validate.record_order`), each ticket's prompt is rendered and its
tokens estimated the way the limiter does (characters / 4 + 3 per message + 3). Completion tokens
cannot be known before the call: the estimate assumes ``expected_completion_tokens`` per ticket
(default 60% of ``max_tokens``) and also gives the ceiling at ``max_tokens``. Duration is bounded
below by the rate limits.

The prompt cache (:mod:`pipeline.caching`): the static prefix (system prompt and
``--prompt_prefix_file``) is assumed written by the first request and read by every later one
while within the TTL; the cost counts those reads at the cached-input price and the write at the
write price of ``--cache_ttl``, ``cache_saved_usd`` is what that saves against plain input, and
Anthropic's input-token limit (which does not count cache reads) bounds the duration without
them.

Example::

    report = estimate(EstimateInputs(pattern="tickets/*.jsonl", ...))
    print(format_estimate(report))
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, Optional

from apache_beam.io.filesystems import FileSystems

from pipeline import caching
from transforms.llm.providers import limited_input_tokens, provider_of
from transforms.llm.tokens import estimate_prompt_tokens
from transforms.pricing import Pricing
from transforms.prompts import PromptRenderer, TemplateRenderError
from transforms.read import iter_file
from transforms.validate import FieldMapping, InvalidRecord, parse_ticket, record_order

DEFAULT_COMPLETION_RATIO = 0.6


@dataclasses.dataclass(frozen=True)
class EstimateInputs:
    """What the estimate needs from the job's configuration."""
    pattern: str
    input_format: str
    fields: FieldMapping
    system_prompt: str
    model: str
    max_tokens: int
    pricing: Pricing
    expected_completion_tokens: Optional[int] = None
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    input_tokens_per_minute: float = 0.0
    output_tokens_per_minute: float = 0.0
    requests_per_day: float = 0.0
    extra_prompt_tokens: int = 0
    prompt_template: Optional[str] = None
    prompt_prefix: Optional[str] = None
    prompt_cache: bool = True
    cache_ttl: str = "5m"
    provider: Optional[str] = None


def _static_prefix(messages) -> tuple:
    """The leading system messages (the system prompt and the shared document)."""
    static = []
    for message in messages:
        if message["role"] != "system":
            break
        static.append(message)
    return tuple(m["content"] for m in static)


def estimate(inputs: EstimateInputs) -> Dict:
    """Reads and validates the input; returns counts, tokens, costs and durations."""
    rejected: Dict[str, int] = collections.Counter()
    # id -> (record order, prompt tokens, or None when its template cannot be rendered)
    kept: Dict[str, tuple] = {}
    read = 0
    renderer = PromptRenderer(inputs.prompt_template, inputs.system_prompt,
                              prefix=inputs.prompt_prefix)
    static_first: Optional[tuple] = None
    for pattern in [p.strip() for p in inputs.pattern.split(",") if p.strip()]:
        for meta in FileSystems.match([pattern])[0].metadata_list:
            for raw in iter_file(meta.path, inputs.input_format):
                read += 1
                try:
                    ticket = parse_ticket(raw, inputs.fields)
                except InvalidRecord as exc:
                    rejected[exc.reason] += 1
                    continue
                order = record_order(ticket.source, ticket.line)
                earlier = kept.get(ticket.id)
                if earlier is not None:
                    rejected["duplicate_id"] += 1
                    if earlier[0] <= order:
                        continue
                shares = False
                try:
                    messages = renderer.render(ticket)
                    tokens = estimate_prompt_tokens(messages) + inputs.extra_prompt_tokens
                    static = _static_prefix(messages)
                    if static_first is None:
                        static_first = static
                    shares = static == static_first
                except TemplateRenderError:
                    tokens = None
                kept[ticket.id] = (order, tokens, shares)
    rendered = [tokens for _, tokens, _ in kept.values() if tokens is not None]
    if len(rendered) < len(kept):
        rejected["template_error"] += len(kept) - len(rendered)
    tickets = len(rendered)
    prompt_tokens = sum(rendered)
    per_ticket_completion = (inputs.expected_completion_tokens
                             if inputs.expected_completion_tokens is not None
                             else int(round(inputs.max_tokens * DEFAULT_COMPLETION_RATIO)))
    completion_tokens = tickets * per_ticket_completion
    completion_ceiling = tickets * inputs.max_tokens
    sharing = sum(1 for _, tokens, shares in kept.values() if tokens is not None and shares)
    # The static prefix's tokens as the limiter estimates them (3 per message, no priming).
    prefix_tokens = (estimate_prompt_tokens([{"role": "system", "content": text}
                                             for text in static_first]) - 3
                     if static_first else 0)

    def cache_of(model: str) -> caching.CacheForecast:
        return caching.forecast(prefix_tokens, sharing, provider_of(model, inputs.provider
                                if model == inputs.model else None), model, inputs.prompt_cache)

    def cost(price, model: str, completion: int) -> float:
        c = cache_of(model)
        return round(price.cost(prompt_tokens, completion, c.read_tokens, c.write_tokens,
                                inputs.cache_ttl), 6)

    costs = {}
    for name, model_price in inputs.pricing.models.items():
        costs[name] = {"expected_usd": cost(model_price, name, completion_tokens),
                       "ceiling_usd": cost(model_price, name, completion_ceiling)}
    price, known = inputs.pricing.lookup(inputs.model)
    batch_price, _ = inputs.pricing.lookup_batch(inputs.model)
    cache = cache_of(inputs.model)
    provider = provider_of(inputs.model, inputs.provider)
    bounds = {}
    if inputs.requests_per_minute:
        bounds["requests_per_minute"] = tickets / inputs.requests_per_minute * 60
    if inputs.tokens_per_minute:
        # Providers charge prompt + max_tokens against the token limit at admission; Anthropic's
        # input-token limit does not count cache reads.
        charged = prompt_tokens + completion_ceiling
        if provider == "anthropic":
            charged -= cache.read_tokens
        bounds["tokens_per_minute"] = charged / inputs.tokens_per_minute * 60
    if inputs.input_tokens_per_minute:  # Anthropic's and Gemini's own input limit
        charged = limited_input_tokens(provider, prompt_tokens, cache.read_tokens)
        bounds["input_tokens_per_minute"] = charged / inputs.input_tokens_per_minute * 60
    if inputs.output_tokens_per_minute:  # reserved at admission, settled to the real output
        bounds["output_tokens_per_minute"] = (completion_tokens / inputs.output_tokens_per_minute
                                              * 60)
    # Beyond --requests_per_day a job does not wait for the next day: the rest are dead letters
    # 'daily_limit', to replay after the reset.
    over_daily = max(0, tickets - int(inputs.requests_per_day)) if inputs.requests_per_day else 0
    return {
        "read": read,
        "tickets": tickets,
        "rejected": dict(rejected),
        "prompt_tokens": prompt_tokens,
        "completion_tokens_expected": completion_tokens,
        "completion_tokens_ceiling": completion_ceiling,
        "completion_tokens_per_ticket": per_ticket_completion,
        "model": inputs.model,
        "model_price_known": known,
        "provider": provider,
        "cost_usd_expected": cost(price, inputs.model, completion_tokens),
        "cost_usd_ceiling": cost(price, inputs.model, completion_ceiling),
        # The prompt cache (pipeline.caching's assumption): included in the costs above.
        "prefix_tokens": prefix_tokens,
        "cache_read_tokens": cache.read_tokens,
        "cache_write_tokens": cache.write_tokens,
        "cache_saved_usd": round(price.cache_saving(cache.read_tokens, cache.write_tokens,
                                                    inputs.cache_ttl), 6),
        # The same answers through the Batch API (--api batch).
        "batch_cost_usd_expected": cost(batch_price, inputs.model, completion_tokens),
        "batch_cost_usd_ceiling": cost(batch_price, inputs.model, completion_ceiling),
        "cost_by_model": costs,
        "min_duration_secs": round(max(bounds.values()), 1) if bounds else None,
        "duration_bounds_secs": {k: round(v, 1) for k, v in bounds.items()},
        "over_requests_per_day": over_daily,
    }


def format_estimate(report: Dict) -> str:
    """The estimate as a short human-readable table."""
    lines = ["ticketflow estimate (no request sent)",
             f"  input records    {report['read']}",
             f"  tickets          {report['tickets']}"
             + (f"  (rejected: {', '.join(f'{k} {v}' for k, v in sorted(report['rejected'].items()))})"
                if report["rejected"] else ""),
             f"  prompt tokens    {report['prompt_tokens']}",
             f"  output tokens    {report['completion_tokens_expected']} expected "
             f"({report['completion_tokens_per_ticket']}/ticket), "
             f"{report['completion_tokens_ceiling']} at most",
             f"  cost ({report['model']})  ${report['cost_usd_expected']:.4f} expected, "
             f"${report['cost_usd_ceiling']:.4f} at most"
             + ("" if report["model_price_known"] else "  [model not in the pricing table]"),
             f"  with --api batch ${report['batch_cost_usd_expected']:.4f} expected, "
             f"${report['batch_cost_usd_ceiling']:.4f} at most (the Batch API's price)"]
    if report.get("cache_read_tokens") or report.get("cache_write_tokens"):
        lines.append(f"  prompt cache     {report['cache_read_tokens']} tokens read, "
                     f"{report['cache_write_tokens']} written (a {report['prefix_tokens']}-token "
                     f"static prefix), saving ${report['cache_saved_usd']:.4f}: assumes "
                     f"{caching.ASSUMPTION}")
    if report["min_duration_secs"] is not None:
        lines.append(f"  duration         at least {report['min_duration_secs']:.0f} s under the "
                     f"rate limits ({', '.join(f'{k}: {v:.0f} s' for k, v in report['duration_bounds_secs'].items())})")
    else:
        lines.append("  duration         no rate limit configured: bounded by latency × tickets "
                     "/ --max_concurrency")
    if report.get("over_requests_per_day"):
        lines.append(f"  requests/day     {report['over_requests_per_day']} tickets beyond "
                     "--requests_per_day: dead letters 'daily_limit', to --replay after the "
                     "provider's day resets")
    lines.append("  cost by model (expected / at most, prompt cache included):")
    for name, cost in sorted(report["cost_by_model"].items(), key=lambda kv: kv[1]["expected_usd"]):
        lines.append(f"    {name:<14} ${cost['expected_usd']:.4f} / ${cost['ceiling_usd']:.4f}")
    return "\n".join(lines)
