"""The LLM step's frozen configuration, and where the worker finds the API key.

:class:`LlmConfig` is built once by the driver and pickled to workers. Rates and the budget in it
are THIS worker process's share (``worker_*``), not the job's totals. Two keys group configs:
:meth:`LlmConfig.engine_key` (the endpoint and the flow settings: what one per-process engine,
with its limiter and connections, may serve) and :meth:`LlmConfig.fingerprint` (everything).

Example::

    config = LlmConfig(base_url="http://127.0.0.1:8000/v1", model="gpt-4o-mini",
                       worker_requests_per_sec=10.0)
    api_key = resolve_api_key(config)   # on the worker, in setup()

:func:`misconfigured_message` says which of these settings to fix when every request fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Optional, Tuple

from transforms import errors
from transforms.limits.concurrency import AdaptiveSettings
from transforms.pricing import Price
from transforms.retry import RetryPolicy
from transforms.structured import StructuredOutput

DISPATCH_CONTINUOUS = "continuous"
DISPATCH_BARRIER = "barrier"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, concise customer-support agent. Read the ticket and write the reply the "
    "support team should send: acknowledge the problem, give concrete next steps, stay polite.")


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    """Everything the LLM step needs.

    The API key is NOT here: workers read it in ``setup()`` from Secret Manager
    (``api_key_secret``) or from the environment variable named by ``api_key_env`` (or use
    ``public_api_key``, for the simulator only, which is no secret).

    Attributes:
      provider: The wire format: ``openai`` (and every compatible server) or ``anthropic``
        (:mod:`transforms.llm.providers`).
      prompt_cache: Mark the static prefix (the system prompt and ``prompt_prefix``) for the
        provider's prompt cache.
      cache_ttl: Anthropic's cache lifetime for it: ``5m`` or ``1h``.
      worker_requests_per_sec: This worker process's share of the request rate (0: none).
      worker_tokens_per_sec: This worker process's share of the token rate (0: none).
      worker_input_tokens_per_sec, worker_output_tokens_per_sec: This worker process's share of
        the input- and output-token rates (0: none; Anthropic's ITPM and OTPM).
      worker_requests_per_day: This worker process's share of the daily request cap (0: none).
      rate_slice_secs: The shortest window the provider enforces its limits over (1: per-second
        slices of a per-minute limit; 60: the whole minute only).
      worker_budget_usd: This worker process's share of ``--max_cost_usd`` (None: no budget).
      shared_quota: ``--shared_quota``, the Redis URL of a quota shared by every worker; then
        ``job_*`` are the whole quota and budget, and ``worker_*`` the fallback share.
      quota_priority: ``--quota_priority``: on the shared quota, who is admitted first
        (``high``, ``normal``, ``low``).
      budget_key: Names the job-wide budget in the shared quota's Redis (the run id), and the
        job's own lane in the shared quota.
      max_outage_secs: How long tickets wait for a provider that is down.
      max_concurrency: Requests in flight per worker process (with ``adaptive_concurrency``:
        the most the controller may choose).
      adaptive_concurrency: ``--max_concurrency auto``: the settings of the controller that
        chooses the limit (:mod:`transforms.limits.concurrency`); None: the fixed number.
      dispatch: ``continuous`` (keep the window full) or ``barrier`` (a benchmark baseline).
    """
    base_url: Optional[str]
    model: str = "gpt-4o-mini"
    provider: str = "openai"
    prompt_cache: bool = True
    cache_ttl: str = "5m"
    api_key_env: str = "OPENAI_API_KEY"
    public_api_key: Optional[str] = None
    api_key_secret: Optional[str] = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    temperature: Optional[float] = None
    max_tokens: int = 256
    request_timeout_secs: float = 60.0
    max_concurrency: int = 32
    adaptive_concurrency: Optional[AdaptiveSettings] = None
    max_ticket_secs: float = 600.0
    worker_requests_per_sec: float = 0.0
    worker_tokens_per_sec: float = 0.0
    worker_input_tokens_per_sec: float = 0.0
    worker_output_tokens_per_sec: float = 0.0
    worker_requests_per_day: float = 0.0
    rate_slice_secs: float = 1.0
    retry: RetryPolicy = RetryPolicy()
    dispatch: str = DISPATCH_CONTINUOUS
    seed: Optional[int] = None
    response_store: Optional[str] = None
    price: Price = Price()
    worker_budget_usd: Optional[float] = None
    # --shared_quota: the job's limits and budget live in this Redis, shared by every worker.
    shared_quota: Optional[str] = None
    quota_key: Optional[str] = None
    quota_priority: str = "normal"
    job_requests_per_sec: float = 0.0
    job_tokens_per_sec: float = 0.0
    job_input_tokens_per_sec: float = 0.0
    job_output_tokens_per_sec: float = 0.0
    job_requests_per_day: float = 0.0
    job_budget_usd: Optional[float] = None
    budget_key: str = ""
    max_outage_secs: float = 900.0
    # --prompt_template's text (None: the built-in prompt); compiled once per worker process.
    prompt_template: Optional[str] = None
    # --prompt_prefix_file's text: a shared document after the system prompt (the static prefix).
    prompt_prefix: Optional[str] = None
    # --response_schema, when answers must be JSON valid against it.
    structured: Optional[StructuredOutput] = None
    # --endpoints: the deployments one job spreads over, each an LlmConfig of its own (its
    # endpoint, key, limits, concurrency, price), with endpoint_name and endpoint_role set.
    # Empty: the one endpoint above (today's path).
    endpoints: Tuple["LlmConfig", ...] = ()
    endpoint_name: Optional[str] = None
    endpoint_role: str = "primary"

    def engine_key(self) -> str:
        """What one per-process engine serves: the endpoint (base URL, model, key's name) and
        the flow settings (rates, concurrency, retries, budget, price).

        Two ``CallModel`` steps that differ only in prompt, template, schema or response store
        share one engine, so they share the worker's quota instead of each taking all of it.
        """
        flow = (self.base_url, self.model, self.api_key_env, self.api_key_secret,
                self.public_api_key is not None, self.request_timeout_secs, self.max_concurrency,
                self.adaptive_concurrency,
                self.worker_requests_per_sec, self.worker_tokens_per_sec,
                self.worker_input_tokens_per_sec, self.worker_output_tokens_per_sec,
                self.worker_requests_per_day, self.job_input_tokens_per_sec,
                self.job_output_tokens_per_sec, self.job_requests_per_day,
                self.rate_slice_secs, self.retry,
                self.seed, self.price, self.worker_budget_usd, self.max_ticket_secs,
                self.shared_quota, self.quota_key, self.quota_priority,
                self.job_requests_per_sec,
                self.job_tokens_per_sec, self.job_budget_usd, self.budget_key,
                self.max_outage_secs, self.endpoints, self.endpoint_name, self.endpoint_role)
        return "engine-" + hashlib.sha256(repr(flow).encode()).hexdigest()[:16]

    def figure_key(self) -> str:
        """Names the endpoint in figures: its ``--endpoints`` name, else base URL and model."""
        return self.endpoint_name or f"{self.base_url or _OPENAI_URL} {self.model}"

    def fingerprint(self) -> str:
        """Identifies the whole configuration (the step: prompt, schema and store included)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def resolve_api_key(config: LlmConfig) -> str:
    """The key the client uses; read on the worker, never logged or pickled.

    Raises:
      errors.AuthFailed: when the environment variable is unset and no public key is configured.
    """
    if config.public_api_key:
        return config.public_api_key
    if config.api_key_secret:
        from transforms import secrets  # pylint: disable=import-outside-toplevel
        try:
            return secrets.resolve_secret(config.api_key_secret)
        except secrets.SecretError as exc:
            raise errors.AuthFailed(str(exc)) from None
    key = os.environ.get(config.api_key_env, "")
    if not key:
        raise errors.AuthFailed(
            f"environment variable {config.api_key_env} is not set on this worker")
    return key


_OPENAI_URL = "https://api.openai.com/v1"


def misconfigured_message(config: LlmConfig, err: errors.ProviderError, where: str,
                          secrets=()) -> str:
    """One line saying which setting to fix when every request fails with ``err``.

    Args:
      config: The step's configuration (endpoint, model, the key's source).
      err: A 404 (:class:`~transforms.errors.ModelNotFound`: the model; any other: the base
        URL's path) or a 401/403 (:class:`~transforms.errors.AuthFailed`: the key).
      where: What got that answer, e.g. ``"the first 3 requests, none succeeded"``.
      secrets: Strings to redact from the provider's message.

    Returns:
      The line, without a prefix (the driver prints it after ``ticketflow: error:``).
    """
    endpoint = config.base_url or _OPENAI_URL
    said = " ".join(errors.redact(err.message or "", secrets).split())
    said = re.sub(r"^Error code: \d+ - ", "", said)[:160]  # the SDK's prefix; the status is said
    said = f": {said}" if said else ""
    if isinstance(err, errors.ModelNotFound):
        return (f"the endpoint {endpoint} does not serve the model {config.model!r} (HTTP 404 "
                f"on {where}{said}): check --model.")
    if isinstance(err, errors.NotFound):
        return (f"the endpoint {endpoint} has no chat completions route (HTTP 404 on {where}"
                f"{said}): check --base_url (OpenAI-compatible servers usually end it in /v1).")
    if config.api_key_secret:
        fix = f"check the key in the secret {config.api_key_secret} (--api_key_secret)"
    else:
        fix = (f"set {config.api_key_env} to a valid key for this endpoint (or name another "
               "variable with --api_key_env)")
    # The provider's words are left out: a 401's may quote part of the key.
    if err.status == 403:
        return (f"the endpoint {endpoint} refused the API key access (HTTP 403 on {where}): "
                f"{fix}, one allowed to use the model {config.model!r}.")
    return f"the endpoint {endpoint} rejected the API key (HTTP 401 on {where}): {fix}."
