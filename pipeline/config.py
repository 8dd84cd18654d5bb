"""Frozen configuration, built once from the options; transforms never see argv.

:func:`from_options` checks the flags and turns them into the transforms' config dataclasses.
Every mistake is a :class:`ConfigError` whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid
from typing import Optional

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)

from pipeline import endpoints_file, flag_files
from pipeline.flag_files import ConfigError
from pipeline.options import TicketflowOptions
from pipeline.stream.config import DEFAULT_MAX_BUFFERING_SECS, StreamConfig, stream_config
from transforms import errors, secrets, structured
from transforms.batch import BatchConfig
from transforms.limits.concurrency import concurrency_setting
from transforms.llm.config import LlmConfig
from transforms.llm.providers import batch_wire, provider_of
from transforms.llm.providers.gemini import KEY_ENVS as GEMINI_KEY_ENVS
from transforms.llm.providers.openai import MAX_LINES as BATCH_MAX_LINES
from transforms.pricing import Price, PricingError, load_pricing
from transforms.retry import RetryPolicy
from transforms.validate import FieldMapping

SIMULATOR_PUBLIC_KEY = "sk-simulated-not-a-secret"
NO_KEY_PLACEHOLDER = "no-key"

@dataclasses.dataclass(frozen=True)
class BatchApiConfig:
    """``--api`` and the Batch API's settings (docs/batch.md).

    Attributes:
      price: The model's Batch API price.
      outcomes: Glob of the outcome files the collect pipeline reads (set by the driver).
    """
    api: str = "online"
    deadline_secs: float = 0.0
    cancel_wait_secs: float = 600.0
    poll_secs: float = 30.0
    submit_only: bool = False
    max_enqueued_tokens: int = 0
    max_lines: int = BATCH_MAX_LINES
    price: Price = Price()
    outcomes: Optional[str] = None

    @property
    def batch(self) -> bool:
        return self.api == "batch"


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The whole job's configuration."""
    input: str
    output: str
    input_format: str
    output_format: str
    overwrite: bool
    fields: FieldMapping
    batch: BatchConfig
    llm: LlmConfig
    simulate: bool
    simulator_flags: str
    worker_processes: int
    worker_share: float
    requests_per_minute: float
    tokens_per_minute: float
    log_level: str
    run_id: str = ""
    resume: bool = False
    replay: bool = False
    estimate: bool = False
    expected_completion_tokens: Optional[int] = None
    max_cost_usd: Optional[float] = None
    price_known: bool = True
    pricing_file: Optional[str] = None
    log_format: str = "text"
    quiet: bool = False
    progress_interval_secs: float = 10.0
    drain_secs: float = 30.0
    skip_preflight: bool = False
    sample: Optional[int] = None
    batch_api: BatchApiConfig = BatchApiConfig()
    stream: Optional[StreamConfig] = None

def worker_processes(options: PipelineOptions) -> int:
    """How many worker processes the runner may run at once (each takes a share of the limits).

    The rule (README, "Rate limits with several workers"):
      * DirectRunner / FnApiRunner / PrismRunner: ``--direct_num_workers`` when
        ``--direct_running_mode multi_processing``, else 1 (threads share one process's limiter).
      * DataflowRunner: ``--max_num_workers`` (or ``--num_workers``) times the vCPUs of
        ``--machine_type`` (Dataflow's Python workers run one SDK process per vCPU).
      * FlinkRunner / SparkRunner: ``--parallelism`` when given.
    """
    runner = (options.view_as(StandardOptions).runner or "DirectRunner")
    runner = runner if isinstance(runner, str) else type(runner).__name__
    all_options = options.get_all_options(retain_unknown_options=True)
    if "Dataflow" in runner:
        worker = options.view_as(WorkerOptions)
        workers = worker.max_num_workers or worker.num_workers or 1
        match = re.search(r"-(\d+)$", worker.machine_type or "")
        vcpus = int(match.group(1)) if match else 1
        return max(1, workers * vcpus)
    if "Flink" in runner or "Spark" in runner:
        parallelism = all_options.get("parallelism")
        return max(1, int(parallelism)) if parallelism and int(parallelism) > 0 else 1
    direct = options.view_as(DirectOptions)
    if (direct.direct_running_mode or "") == "multi_processing":
        return max(1, direct.direct_num_workers or 1)
    return 1

def _shared_quota(url: Optional[str], name: Optional[str], priority: str) -> None:
    """``--shared_quota`` is a Redis URL; ``--quota_key`` a name Redis keys can carry;
    ``--quota_priority`` other than normal orders jobs on a shared quota, so needs one."""
    if url is None:
        if name is not None:
            raise ConfigError("--quota_key names a shared quota: pass --shared_quota "
                              "redis://HOST:PORT too.")
        if priority != "normal":
            raise ConfigError(f"--quota_priority {priority} orders the jobs on one shared "
                              "quota: pass --shared_quota redis://HOST:PORT (and the same "
                              "--quota_key as the other jobs) too, or drop it.")
        return
    if not re.match(r"^(redis|rediss|unix)://[^\s]+$", url):
        raise ConfigError(f"--shared_quota must be a Redis URL, redis://HOST:PORT[/DB] (or "
                          f"rediss:// for TLS), got {errors.redact_url(url)!r}.")
    if name is not None and not re.match(r"^[A-Za-z0-9_.:/@|-]{1,200}$", name):
        raise ConfigError("--quota_key may hold letters, digits and _ . : / @ | - (at most 200), "
                          f"got {name!r}.")


def _positive(name: str, value, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")

def from_options(options: PipelineOptions) -> JobConfig:
    """Checks the flags and builds the job's configuration.

    Raises:
      ConfigError: with a one-line, actionable message.
    """
    o = options.view_as(TicketflowOptions)
    runner = str(options.view_as(StandardOptions).runner or "")
    stream = stream_config(o, ConfigError, local="Dataflow" not in runner)
    if not o.input and stream is None:
        raise ConfigError("--input is required: a JSONL or Parquet path, glob or gs:// pattern, "
                          "e.g. --input examples/tickets.jsonl")
    if not o.output:
        raise ConfigError("--output is required: a directory for results, dead letters and the "
                          "summary, e.g. --output out/run1")
    try:
        max_concurrency, adaptive = concurrency_setting(o.max_concurrency)
    except ValueError as exc:
        raise ConfigError(f"--{exc}.") from None
    for name in ("batch_size", "max_tokens", "max_input_chars",
                 "num_key_shards", "request_timeout_secs", "max_ticket_secs",
                 "progress_interval_secs"):
        _positive(name, getattr(o, name))
    for name in ("requests_per_minute", "tokens_per_minute", "input_tokens_per_minute",
                 "output_tokens_per_minute", "requests_per_day", "max_retries",
                 "initial_backoff_secs", "max_backoff_secs", "max_retry_after_secs",
                 "max_buffering_secs", "drain_secs"):
        _positive(name, getattr(o, name), allow_zero=True)
    if not 0 < o.rate_slice_secs <= 60:
        raise ConfigError(f"--rate_slice_secs must be in (0, 60] (the shortest window, in "
                          f"seconds, the provider enforces its limits over), got "
                          f"{o.rate_slice_secs:g}.")
    if o.worker_share is not None and not 0 < o.worker_share <= 1:
        raise ConfigError(f"--worker_share must be in (0, 1], got {o.worker_share}.")
    if o.temperature is not None and not 0 <= o.temperature <= 2:
        raise ConfigError(f"--temperature must be between 0 and 2, got {o.temperature}.")

    template = flag_files.prompt_template(o.prompt_template)
    prompt_prefix = flag_files.prompt_prefix(o.prompt_prefix_file)
    response_schema = flag_files.response_schema(o.response_schema, o.output_format)

    processes = worker_processes(options)
    share = o.worker_share if o.worker_share is not None else 1.0 / processes
    estimate_per_request = o.max_tokens + 1
    if response_schema is not None:
        estimate_per_request += structured.schema_overhead_tokens(response_schema.schema)
    if o.tokens_per_minute and o.tokens_per_minute * share < estimate_per_request:
        raise ConfigError(
            f"--tokens_per_minute={o.tokens_per_minute:g} gives each of {processes} worker "
            f"process(es) {o.tokens_per_minute * share:.0f} tokens/min, less than one request's "
            f"--max_tokens={o.max_tokens} (plus the --response_schema, if any): raise the limit "
            "or lower --max_tokens.")

    if o.output_tokens_per_minute and o.output_tokens_per_minute * share < o.max_tokens:
        raise ConfigError(
            f"--output_tokens_per_minute={o.output_tokens_per_minute:g} gives each of "
            f"{processes} worker process(es) {o.output_tokens_per_minute * share:.0f} output "
            f"tokens/min, less than one request's --max_tokens={o.max_tokens} (reserved until "
            "the answer comes): raise the limit or lower --max_tokens.")
    if o.requests_per_day and o.requests_per_day * share < 1:
        raise ConfigError(
            f"--requests_per_day={o.requests_per_day:g} gives each of {processes} worker "
            f"process(es) less than one request a day: raise it, or use --shared_quota (one "
            "daily cap for every worker).")

    _positive("max_cost_usd", o.max_cost_usd)
    _positive("max_outage_secs", o.max_outage_secs, allow_zero=True)
    _shared_quota(o.shared_quota, o.quota_key, o.quota_priority)
    _positive("sample", o.sample)
    _positive("expected_completion_tokens", o.expected_completion_tokens, allow_zero=True)
    if o.resume and o.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume keeps "
                          "earlier results, --overwrite deletes them. Pass one.")
    try:
        pricing = load_pricing(o.pricing_file)
    except PricingError as exc:
        raise ConfigError(f"--pricing_file: {exc}") from None
    price, price_known = pricing.lookup(o.model)
    batch_api = _batch_api(o, pricing.lookup_batch(o.model)[0])

    provider = provider_of(o.model, o.provider)
    api_key_env = o.api_key_env
    if provider == "anthropic" and api_key_env == "OPENAI_API_KEY":
        api_key_env = "ANTHROPIC_API_KEY"
    if provider == "gemini" and api_key_env == "OPENAI_API_KEY":
        # As Google's client: GEMINI_API_KEY, else GOOGLE_API_KEY.
        api_key_env = next((name for name in GEMINI_KEY_ENVS if os.environ.get(name)),
                           GEMINI_KEY_ENVS[0])
    base_url = o.base_url
    public_key = None
    if o.simulate or o.estimate:
        public_key = SIMULATOR_PUBLIC_KEY
    elif o.api_key_secret:
        try:
            secrets.parse_secret_version(o.api_key_secret)
        except secrets.SecretError as exc:
            raise ConfigError(f"--api_key_secret: {exc}") from None
    elif not os.environ.get(api_key_env) and not o.endpoints:  # each endpoint has its own
        if base_url:
            # A local OpenAI-compatible server (vLLM, Ollama, ...) often needs no key.
            public_key = NO_KEY_PLACEHOLDER
        else:
            wanted = (" or ".join(GEMINI_KEY_ENVS) if provider == "gemini"
                      and api_key_env == GEMINI_KEY_ENVS[0] else api_key_env)
            raise ConfigError(
                f"no API key: set the environment variable {wanted} (or name another "
                "with --api_key_env, or use --api_key_secret), point --base_url at a provider that needs none, or pass "
                "--simulate to use the bundled simulator.")

    run_id = new_run_id()
    llm = LlmConfig(
        base_url=base_url,
        model=o.model,
        provider=provider,
        prompt_cache=o.prompt_cache == "on",
        cache_ttl=o.cache_ttl,
        api_key_env=api_key_env,
        public_api_key=public_key,
        api_key_secret=None if public_key else o.api_key_secret,
        system_prompt=flag_files.read_system_prompt(o.system_prompt),
        temperature=o.temperature,
        max_tokens=o.max_tokens,
        request_timeout_secs=o.request_timeout_secs,
        max_concurrency=max_concurrency,
        adaptive_concurrency=adaptive,
        max_ticket_secs=o.max_ticket_secs,
        worker_requests_per_sec=o.requests_per_minute * share / 60.0,
        worker_tokens_per_sec=o.tokens_per_minute * share / 60.0,
        worker_input_tokens_per_sec=o.input_tokens_per_minute * share / 60.0,
        worker_output_tokens_per_sec=o.output_tokens_per_minute * share / 60.0,
        worker_requests_per_day=o.requests_per_day * share,
        rate_slice_secs=o.rate_slice_secs,
        retry=RetryPolicy(max_retries=o.max_retries, initial_backoff_secs=o.initial_backoff_secs,
                          max_backoff_secs=o.max_backoff_secs,
                          max_retry_after_secs=o.max_retry_after_secs),
        dispatch=o.dispatch,
        response_store=o.response_store.rstrip("/") if o.response_store else None,
        price=price,
        worker_budget_usd=o.max_cost_usd * share if o.max_cost_usd is not None else None,
        shared_quota=o.shared_quota,
        quota_key=o.quota_key,
        quota_priority=o.quota_priority,
        job_requests_per_sec=o.requests_per_minute / 60.0,
        job_tokens_per_sec=o.tokens_per_minute / 60.0,
        job_input_tokens_per_sec=o.input_tokens_per_minute / 60.0,
        job_output_tokens_per_sec=o.output_tokens_per_minute / 60.0,
        job_requests_per_day=o.requests_per_day,
        job_budget_usd=o.max_cost_usd,
        budget_key=run_id,
        max_outage_secs=o.max_outage_secs,
        prompt_template=template,
        prompt_prefix=prompt_prefix,
        structured=response_schema,
    )
    requests_per_minute, tokens_per_minute = o.requests_per_minute, o.tokens_per_minute
    if o.endpoints:
        llm = _with_endpoints(o, llm, share, pricing)
        primaries = [e for e in llm.endpoints if e.endpoint_role == "primary"]
        requests_per_minute = sum(e.job_requests_per_sec for e in primaries) * 60.0
        tokens_per_minute = sum(e.job_tokens_per_sec for e in primaries) * 60.0
    return JobConfig(
        input=o.input or o.input_subscription,
        output=o.output.rstrip("/"),
        input_format=o.input_format,
        output_format=o.output_format,
        overwrite=o.overwrite,
        fields=FieldMapping(id_field=o.id_field, text_field=o.text_field,
                            subject_field=o.subject_field, max_input_chars=o.max_input_chars),
        batch=BatchConfig(batch_size=o.batch_size,
                          max_buffering_secs=o.max_buffering_secs or (
                              DEFAULT_MAX_BUFFERING_SECS if stream is not None else None),
                          key_field=o.key_field, num_shards=o.num_key_shards),
        llm=llm,
        simulate=o.simulate,
        simulator_flags=o.simulator_flags or "",
        worker_processes=processes,
        worker_share=share,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        log_level=o.log_level,
        run_id=run_id,
        resume=o.resume,
        replay=o.replay,
        estimate=o.estimate,
        expected_completion_tokens=o.expected_completion_tokens,
        max_cost_usd=o.max_cost_usd,
        price_known=price_known,
        pricing_file=o.pricing_file,
        log_format=o.log_format,
        quiet=o.quiet,
        progress_interval_secs=o.progress_interval_secs,
        drain_secs=o.drain_secs,
        skip_preflight=o.skip_preflight,
        sample=o.sample,
        batch_api=batch_api,
        stream=stream,
    )


def _with_endpoints(o: TicketflowOptions, llm: LlmConfig, share: float, pricing) -> LlmConfig:
    """The job's configuration spread over ``--endpoints FILE`` (its first primary stands for
    the job where one endpoint is named: the preflight, the summary's model)."""
    if o.simulate or o.estimate or o.api == "batch" or o.base_url:
        raise ConfigError("--endpoints names every endpoint: it does not go with --base_url, "
                          "--simulate, --estimate or --api batch.")
    try:
        entries = endpoints_file.parse_endpoints(flag_files.read_flag_file("endpoints", o.endpoints),
                                                 o.endpoints)
    except endpoints_file.EndpointsFileError as exc:
        raise ConfigError(str(exc)) from None

    def key_for(api_key_env: str, base_url: Optional[str], name: str) -> Optional[str]:
        if o.api_key_secret or os.environ.get(api_key_env):
            return None
        if base_url:
            return NO_KEY_PLACEHOLDER  # a local server often needs no key
        raise ConfigError(f"--endpoints {o.endpoints}: endpoint {name}: no API key: set the "
                          f"environment variable {api_key_env} (or name another with "
                          "api_key_env).")

    endpoints = endpoints_file.endpoint_configs(entries, llm, share=share, pricing=pricing,
                                                key_for=key_for)
    first = next(e for e in endpoints if e.endpoint_role == "primary")
    return dataclasses.replace(
        llm, base_url=first.base_url, model=first.model, provider=first.provider,
        api_key_env=first.api_key_env, public_api_key=first.public_api_key,
        max_concurrency=sum(e.max_concurrency for e in endpoints), endpoints=endpoints)


def _batch_api(o: TicketflowOptions, price: Price) -> BatchApiConfig:
    """Checks the Batch API flags (they only matter with --api batch)."""
    _positive("batch_poll_secs", o.batch_poll_secs)
    _positive("batch_deadline_secs", o.batch_deadline_secs, allow_zero=True)
    _positive("batch_cancel_wait_secs", o.batch_cancel_wait_secs, allow_zero=True)
    _positive("batch_max_enqueued_tokens", o.batch_max_enqueued_tokens, allow_zero=True)
    # The provider's limit: OpenAI's 50,000 lines per file, Anthropic's 100,000 per batch.
    most = batch_wire(provider_of(o.model, o.provider)).MAX_LINES
    if not 1 <= o.batch_max_lines <= most:
        raise ConfigError(f"--batch_max_lines must be between 1 and {most} (the "
                          f"provider's limit), got {o.batch_max_lines}.")
    if o.api != "batch" and o.batch_submit_only:
        raise ConfigError("--batch_submit_only needs --api batch.")
    if o.api == "batch" and o.max_cost_usd is not None:
        raise ConfigError("--max_cost_usd is not supported with --api batch (a batch is paid "
                          "when the provider answers it, not request by request): check the "
                          "cost first with --estimate, which prints the batch price too.")
    return BatchApiConfig(api=o.api, deadline_secs=o.batch_deadline_secs or 0.0,
                          cancel_wait_secs=o.batch_cancel_wait_secs,
                          poll_secs=o.batch_poll_secs, submit_only=o.batch_submit_only,
                          max_enqueued_tokens=o.batch_max_enqueued_tokens or 0,
                          max_lines=o.batch_max_lines, price=price)


def new_run_id() -> str:
    """A sortable, unique id for one run: its result and dead-letter shards carry it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]

def with_base_url(config: JobConfig, base_url: str) -> JobConfig:
    """The same configuration pointed at another endpoint (used by --simulate)."""
    return dataclasses.replace(config, llm=dataclasses.replace(config.llm, base_url=base_url))

def redacted(config: JobConfig) -> dict:
    """The configuration as a dict safe to log (it never holds a key; the env var's name is fine)."""
    out = dataclasses.asdict(config)
    out["llm"].pop("system_prompt", None)
    out["llm"].pop("prompt_template", None)
    out["llm"].pop("prompt_prefix", None)
    if out["llm"].get("public_api_key") not in (None, SIMULATOR_PUBLIC_KEY, NO_KEY_PLACEHOLDER):
        out["llm"]["public_api_key"] = "[REDACTED]"
    if out["llm"].get("shared_quota"):
        out["llm"]["shared_quota"] = errors.redact_url(out["llm"]["shared_quota"])
    out["llm"]["endpoints"] = endpoints_file.describe(config.llm.endpoints)
    return out
