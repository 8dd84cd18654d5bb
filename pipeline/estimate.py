"""``--estimate``: what a run would cost and how long it would take, without calling the provider.

The input is read and validated exactly as the pipeline does (same reader, same checks, the same
duplicate rule: :func:`transforms.validate.record_order`), each ticket's prompt is rendered and its
tokens estimated the way the limiter does (characters / 4 + 3 per message + 3). Completion tokens
cannot be known before the call: the estimate assumes ``expected_completion_tokens`` per ticket
(default 60% of ``max_tokens``) and also gives the ceiling at ``max_tokens``. Duration is bounded
below by the rate limits.

Example::

    report = estimate(EstimateInputs(pattern="tickets/*.jsonl", ...))
    print(format_estimate(report))
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, Optional

from apache_beam.io.filesystems import FileSystems

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
    extra_prompt_tokens: int = 0
    prompt_template: Optional[str] = None


def estimate(inputs: EstimateInputs) -> Dict:
    """Reads and validates the input; returns counts, tokens, costs and durations."""
    rejected: Dict[str, int] = collections.Counter()
    # id -> (record order, prompt tokens, or None when its template cannot be rendered)
    kept: Dict[str, tuple] = {}
    read = 0
    renderer = PromptRenderer(inputs.prompt_template, inputs.system_prompt)
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
                try:
                    tokens = (estimate_prompt_tokens(renderer.render(ticket))
                              + inputs.extra_prompt_tokens)
                except TemplateRenderError:
                    tokens = None
                kept[ticket.id] = (order, tokens)
    rendered = [tokens for _, tokens in kept.values() if tokens is not None]
    if len(rendered) < len(kept):
        rejected["template_error"] += len(kept) - len(rendered)
    tickets = len(rendered)
    prompt_tokens = sum(rendered)
    per_ticket_completion = (inputs.expected_completion_tokens
                             if inputs.expected_completion_tokens is not None
                             else int(round(inputs.max_tokens * DEFAULT_COMPLETION_RATIO)))
    completion_tokens = tickets * per_ticket_completion
    completion_ceiling = tickets * inputs.max_tokens
    costs = {}
    for name, price in inputs.pricing.models.items():
        costs[name] = {"expected_usd": round(price.cost(prompt_tokens, completion_tokens), 6),
                       "ceiling_usd": round(price.cost(prompt_tokens, completion_ceiling), 6)}
    price, known = inputs.pricing.lookup(inputs.model)
    batch_price, _ = inputs.pricing.lookup_batch(inputs.model)
    bounds = {}
    if inputs.requests_per_minute:
        bounds["requests_per_minute"] = tickets / inputs.requests_per_minute * 60
    if inputs.tokens_per_minute:
        # Providers charge prompt + max_tokens against the token limit at admission.
        bounds["tokens_per_minute"] = ((prompt_tokens + completion_ceiling)
                                       / inputs.tokens_per_minute * 60)
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
        "cost_usd_expected": round(price.cost(prompt_tokens, completion_tokens), 6),
        "cost_usd_ceiling": round(price.cost(prompt_tokens, completion_ceiling), 6),
        # The same answers through the Batch API (--api batch).
        "batch_cost_usd_expected": round(batch_price.cost(prompt_tokens, completion_tokens), 6),
        "batch_cost_usd_ceiling": round(batch_price.cost(prompt_tokens, completion_ceiling), 6),
        "cost_by_model": costs,
        "min_duration_secs": round(max(bounds.values()), 1) if bounds else None,
        "duration_bounds_secs": {k: round(v, 1) for k, v in bounds.items()},
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
    if report["min_duration_secs"] is not None:
        lines.append(f"  duration         at least {report['min_duration_secs']:.0f} s under the "
                     f"rate limits ({', '.join(f'{k}: {v:.0f} s' for k, v in report['duration_bounds_secs'].items())})")
    else:
        lines.append("  duration         no rate limit configured: bounded by latency × tickets "
                     "/ --max_concurrency")
    lines.append("  cost by model (expected / at most):")
    for name, cost in sorted(report["cost_by_model"].items(), key=lambda kv: kv[1]["expected_usd"]):
        lines.append(f"    {name:<14} ${cost['expected_usd']:.4f} / ${cost['ceiling_usd']:.4f}")
    return "\n".join(lines)
