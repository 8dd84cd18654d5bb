"""Configuration of the provider simulator: one frozen dataclass, one flag per field.

The flags are declared once here. ``python -m simulator`` parses them, and the pipeline can add
the same flags to its own parser (with a prefix, so ``--rpm`` does not clash with its own limits):

    parser = argparse.ArgumentParser()
    add_arguments(parser, prefix="sim_")           # --sim_rpm, --sim_p_500, ...
    config = SimulatorConfig.from_namespace(parser.parse_args(argv), prefix="sim_")
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

#: Fault probability fields, in the order the fault draw walks them.
FAULT_FIELDS = ("p_500", "p_502", "p_503", "p_hang", "p_reset", "p_malformed", "p_content_filter")

# name -> help text; the type and default come from the dataclass field. Kept beside the fields so
# the README table, --help and the dataclass cannot drift apart.
_HELP = {
    "host": "Interface to listen on. Keep the loopback default unless you know why not.",
    "port": "TCP port; 0 picks a free one (the first stdout line says which).",
    "rpm": "Requests per minute allowed (rolling one-minute window); 0 = unlimited.",
    "tpm": "Tokens per minute allowed (prompt tokens + max output tokens); 0 = unlimited.",
    "burst_secs": "Also enforce limit*B/60 over any rolling B-second window when B < 60.",
    "anthropic_rpm": "Anthropic Messages API: requests per minute, a bucket refilled "
                     "continuously; 0 = unlimited.",
    "anthropic_itpm": "Anthropic Messages API: input tokens per minute (uncached input + cache "
                      "writes; cache reads are free); 0 = unlimited.",
    "anthropic_otpm": "Anthropic Messages API: output tokens per minute, charged at max_tokens "
                      "on admission and settled to the real output; 0 = unlimited.",
    "gemini_rpm": "Gemini API: requests per minute, a bucket refilled continuously; 0 = "
                  "unlimited.",
    "gemini_tpm": "Gemini API: input tokens per minute (every prompt token, cached or not), a "
                  "bucket refilled continuously; 0 = unlimited.",
    "gemini_rpd": "Gemini API: requests per day (a day from the start or the last reset); 0 = "
                  "unlimited.",
    "default_max_tokens": "Output tokens charged against --tpm when a request sets no max_tokens.",
    "context_window": "Prompts over this many tokens get 400 context_length_exceeded.",
    "latency_median_ms": "Median of the log-normal response latency; 0 = no latency.",
    "latency_p99_ms": "99th percentile of the latency; 0 or <= median = constant median.",
    "ms_per_output_token": "Extra latency per completion token (ms).",
    "seed": "Seed of the latency and fault draws (same seed, same sequence).",
    "p_500": "Probability of HTTP 500 (server_error).",
    "p_502": "Probability of HTTP 502 (bad gateway).",
    "p_503": "Probability of HTTP 503 (service unavailable); Anthropic's route answers 529 "
             "overloaded_error instead.",
    "p_hang": "Probability of hanging for --hang_secs, then answering 504.",
    "hang_secs": "How long a hanging request sleeps before its 504.",
    "p_reset": "Probability of a connection reset after part of the response was written.",
    "p_malformed": "Probability of HTTP 200 whose body is not valid JSON.",
    "p_content_filter": "Probability of HTTP 400 with code content_filter (Anthropic's route: "
                        "200 with stop_reason refusal).",
    "api_key": "If set, requests must send 'Authorization: Bearer KEY' (Anthropic's route also "
               "takes 'x-api-key: KEY') or get 401.",
    "models": "Comma-separated model ids served; any other gets 404 model_not_found, as at "
              "OpenAI; empty = any model name is served.",
    "max_concurrency": "Requests in flight beyond this get 503 overloaded (Anthropic's route: "
                       "529 overloaded_error); 0 = unlimited.",
    "server_model": "What answers chat completions: 'api' (a hosted API: --latency_*, limits) or "
                    "'gpu' (a GPU-like server with continuous batching: --gpu_*; throughput "
                    "has a knee at --gpu_max_batch, 503 when its queue is full).",
    "gpu_max_batch": "--server_model gpu: sequences decoded at once (the knee).",
    "gpu_decode_ms": "--server_model gpu: one decoding step's time with one sequence (ms).",
    "gpu_decode_ms_per_seq": "--server_model gpu: what each further sequence adds to a step "
                             "(ms).",
    "gpu_prefill_ms_per_token": "--server_model gpu: prefill time per prompt token, paid in the "
                                "step that admits the sequence (ms).",
    "gpu_queue": "--server_model gpu: sequences that may wait for a place in the batch; a "
                 "request beyond gets 503 overloaded.",
    "log_requests": "Log one line per request to stderr (off by default: it costs throughput).",
    "batch_secs": "Batch API: seconds from a batch's creation to its completion; 0 = done by "
                  "the next poll.",
    "batch_p_line_fail": "Batch API: fraction of each batch's lines answered with HTTP 500 "
                         "(they go to the error file).",
    "batch_expire_fraction": "Batch API: fraction of each batch's lines left unfinished when it "
                             "expires (status expired, error code batch_expired); 0 = never.",
    "batch_fail_validation": "Batch API: every new batch fails validation (status failed).",
    "batch_max_enqueued_tokens": "Batch API: per-model limit on the tokens of unfinished batches "
                                 "(prompt + max output tokens per line); a batch over it fails "
                                 "with token_limit_exceeded; 0 = unlimited.",
    "batch_stall_secs": "Batch API: seconds POST /v1/files and POST /v1/batches wait AFTER "
                        "creating the file or batch before answering (a client killed "
                        "meanwhile leaves it behind, as a crash would); 0 = none.",
}


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator can be told; each field is also a ``--flag`` of the same name.

    Raises:
        ValueError: On construction, if a value is out of range (negative counts, probabilities
            outside [0, 1] or summing to more than 1).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    rpm: int = 0
    tpm: int = 0
    burst_secs: float = 60.0
    anthropic_rpm: int = 0
    anthropic_itpm: int = 0
    anthropic_otpm: int = 0
    gemini_rpm: int = 0
    gemini_tpm: int = 0
    gemini_rpd: int = 0
    default_max_tokens: int = 256
    context_window: int = 128_000
    latency_median_ms: float = 0.0
    latency_p99_ms: float = 0.0
    ms_per_output_token: float = 0.0
    seed: int = 0
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_hang: float = 0.0
    hang_secs: float = 30.0
    p_reset: float = 0.0
    p_malformed: float = 0.0
    p_content_filter: float = 0.0
    api_key: str = ""
    models: str = ""
    max_concurrency: int = 0
    server_model: str = "api"
    gpu_max_batch: int = 48
    gpu_decode_ms: float = 10.0
    gpu_decode_ms_per_seq: float = 0.02
    gpu_prefill_ms_per_token: float = 0.01
    gpu_queue: int = 64
    log_requests: bool = False
    batch_secs: float = 2.0
    batch_p_line_fail: float = 0.0
    batch_expire_fraction: float = 0.0
    batch_fail_validation: bool = False
    batch_max_enqueued_tokens: int = 0
    batch_stall_secs: float = 0.0

    def __post_init__(self) -> None:
        for name in ("port", "rpm", "tpm", "anthropic_rpm", "anthropic_itpm", "anthropic_otpm",
                     "gemini_rpm", "gemini_tpm", "gemini_rpd",
                     "max_concurrency", "latency_median_ms", "latency_p99_ms",
                     "ms_per_output_token", "hang_secs", "batch_secs",
                     "batch_max_enqueued_tokens", "batch_stall_secs", "gpu_decode_ms",
                     "gpu_decode_ms_per_seq", "gpu_prefill_ms_per_token", "gpu_queue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.server_model not in ("api", "gpu"):
            raise ValueError(f"server_model must be 'api' or 'gpu', got {self.server_model!r}")
        for name in ("default_max_tokens", "context_window", "gpu_max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.burst_secs <= 60:
            raise ValueError(f"burst_secs must be in (0, 60], got {self.burst_secs}")
        for name in FAULT_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("batch_p_line_fail", "batch_expire_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        total = sum(getattr(self, name) for name in FAULT_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities sum to {total:.3f} > 1")

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace, prefix: str = "") -> SimulatorConfig:
        """Builds a config from parsed flags.

        Args:
            namespace: The result of a parser that ``add_arguments`` was applied to.
            prefix: The same prefix given to ``add_arguments``.

        Returns:
            The config; fields whose flag is absent from ``namespace`` keep their defaults.
        """
        values = {}
        for field in dataclasses.fields(cls):
            key = prefix + field.name
            if hasattr(namespace, key):
                values[field.name] = getattr(namespace, key)
        return cls(**values)

    def served_models(self) -> tuple[str, ...]:
        """The model ids of ``--models`` (empty: every model name is served)."""
        return tuple(m.strip() for m in self.models.split(",") if m.strip())

    def replace(self, **changes: Any) -> SimulatorConfig:
        """Returns a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> argparse.ArgumentParser:
    """Adds one ``--flag`` per ``SimulatorConfig`` field to ``parser``.

    Args:
        parser: Any argparse parser (a Beam ``_add_argparse_args`` parser works too).
        prefix: Prepended to every flag name and dest, e.g. "sim_" gives ``--sim_rpm``.

    Returns:
        The same parser, for chaining.
    """
    for field in dataclasses.fields(SimulatorConfig):
        flag = f"--{prefix}{field.name}"
        help_text = f"{_HELP[field.name]} (default: {field.default!r})"
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=prefix + field.name, action="store_true",
                                default=field.default, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(flag, dest=prefix + field.name, type=kind,
                                default=field.default, help=help_text)
    return parser


def flag_help() -> dict[str, str]:
    """Returns flag name -> help text (used to check the README lists every flag)."""
    return dict(_HELP)


def config_from_argv(argv: Sequence[str] | None = None) -> SimulatorConfig:
    """Parses command-line flags into a config.

    Args:
        argv: The arguments without the program name; None means ``sys.argv[1:]``.

    Returns:
        The validated config.

    Raises:
        SystemExit: On unknown flags or invalid values (argparse's usual behaviour).
    """
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m simulator", allow_abbrev=False,
        description="Local OpenAI- and Anthropic-compatible provider with limits and faults."))
    namespace = parser.parse_args(argv)
    try:
        return SimulatorConfig.from_namespace(namespace)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
