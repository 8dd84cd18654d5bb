"""The ONE PipelineOptions subclass: every ticketflow flag is declared here.

Standard Beam options (``--runner``, ``--direct_num_workers``, ``--project``, ...) pass through
untouched. ``templates/metadata.json`` mirrors these flags and a test keeps the two in sync.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions


def _bool_flag(value: str) -> bool:
    """Parses ``--flag=true|false`` (Flex Template launchers pass booleans with a value)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _switch(group, name: str, help_text: str) -> None:
    """A boolean flag usable as ``--name``, ``--name=true`` and ``--name=false``."""
    group.add_argument(name, type=_bool_flag, nargs="?", const=True, default=False, help=help_text)


class TicketflowOptions(PipelineOptions):
    """ticketflow's own flags (see README, "Flags")."""

    @classmethod
    def _add_argparse_args(cls, parser):
        io = parser.add_argument_group("input and output")
        io.add_argument("--input", help="Input path, glob or gs:// pattern (comma-separated for "
                        "several). JSONL or Parquet.")
        io.add_argument("--output", help="Output prefix (a directory, local or gs://): "
                        "results-*, dead_letter-* and summary.json are written under it.")
        io.add_argument("--input_format", default="auto", choices=("auto", "jsonl", "parquet"),
                        help="Input format; auto decides by file extension (.parquet or JSONL).")
        io.add_argument("--output_format", default="jsonl", choices=("jsonl", "parquet"),
                        help="Format of the results files. Dead letters are always JSONL.")
        _switch(io, "--overwrite",
                "Delete earlier results-*/dead_letter-*/summary.json under --output before "
                "running (otherwise such files stop the run).")
        io.add_argument("--id_field", default="id", help="Input field holding the ticket id.")
        io.add_argument("--text_field", default="body", help="Input field holding the ticket text.")
        io.add_argument("--subject_field", default="subject",
                        help="Input field holding the subject (used when present).")
        io.add_argument("--max_input_chars", type=int, default=20000,
                        help="Longer texts become dead letters (reason text_too_long).")

        batching = parser.add_argument_group("batching")
        batching.add_argument("--key_field", default=None,
                              help="Input field to batch by (e.g. priority); default: a stable "
                              "hash shard of the id.")
        batching.add_argument("--num_key_shards", type=int, default=16,
                              help="Hash shards when batching by id.")
        batching.add_argument("--batch_size", type=int, default=50, help="Tickets per batch.")
        batching.add_argument("--max_buffering_secs", type=float, default=0.0,
                              help="Longest a partial batch waits before it is sent "
                              "(0: until the key's input ends; streaming jobs default to 1).")

        llm = parser.add_argument_group("model")
        llm.add_argument("--base_url", default=None,
                         help="OpenAI-compatible API base URL (default: OpenAI's).")
        llm.add_argument("--endpoints", default=None, metavar="FILE",
                         help="A YAML file of several endpoints for one job (each with its "
                         "base_url, model, key and limits; role primary or fallback): tickets "
                         "go to the primary with the most capacity now, fallbacks only while "
                         "every primary is out (docs/throughput.md, Endpoint files).")
        llm.add_argument("--provider", default=None, choices=("openai", "anthropic", "gemini"),
                         help="The API's wire format; default: from --model (claude-* is "
                         "anthropic, gemini-* is gemini, anything else openai, which also "
                         "serves every OpenAI-compatible endpoint).")
        llm.add_argument("--prompt_cache", default="on", choices=("on", "off"),
                         help="Mark the static prefix of every request (the system prompt and "
                         "--prompt_prefix_file) for the provider's prompt cache (Anthropic: a "
                         "cache_control breakpoint; OpenAI: a prompt_cache_key; off: the same "
                         "prompt, unmarked).")
        llm.add_argument("--cache_ttl", default="5m", choices=("5m", "1h"),
                         help="Anthropic: how long a cached prefix lives (1h costs more to "
                         "write; it suits batches and sparse streams).")
        llm.add_argument("--api_key_env", default="OPENAI_API_KEY",
                         help="Name of the environment variable holding the API key "
                         "(with --provider anthropic the default is ANTHROPIC_API_KEY; with "
                         "--provider gemini GEMINI_API_KEY, else GOOGLE_API_KEY, as Google's "
                         "client).")
        llm.add_argument("--api_key_secret", default=None,
                         help="Secret Manager version holding the API key, "
                         "projects/P/secrets/S/versions/V (V a number or latest); read by each "
                         "worker in setup() (needs roles/secretmanager.secretAccessor).")
        llm.add_argument("--model", default="gpt-4o-mini", help="Model name.")
        llm.add_argument("--system_prompt", default=None,
                         help="System prompt text, or @FILE to read it from a file.")
        llm.add_argument("--prompt_template", default=None, metavar="FILE",
                         help="Jinja2 file whose 'system' and 'user' blocks render the messages "
                         "from any ticket field (sandboxed; a missing field makes the ticket a "
                         "template_error dead letter). Default: the built-in prompt.")
        llm.add_argument("--prompt_prefix_file", default=None, metavar="PATH",
                         help="A long document shared by every request (a policy manual, "
                         "examples), placed after the system prompt and before the ticket; "
                         "read once at start and marked for the prompt cache.")
        llm.add_argument("--response_schema", default=None, metavar="FILE",
                         help="JSON Schema file: answers must be JSON valid against it "
                         "(structured outputs); an invalid answer is sent back once with the "
                         "error, then becomes an invalid_output dead letter. Fields go to "
                         "'output' (JSONL) or typed columns (Parquet).")
        llm.add_argument("--temperature", type=float, default=None, help="Sampling temperature.")
        llm.add_argument("--max_tokens", type=int, default=256,
                         help="Most completion tokens per ticket.")
        llm.add_argument("--request_timeout_secs", type=float, default=60.0,
                         help="Timeout of one HTTP request.")

        limits = parser.add_argument_group("throughput and limits")
        limits.add_argument("--max_concurrency", default="32",
                            help="Most requests in flight per worker process: a number, or "
                                 "'auto' (found and held at the server's knee from latency "
                                 "and 503s/timeouts; at most 256) or 'auto:MAX'.")
        limits.add_argument("--requests_per_minute", type=float, default=0.0,
                            help="The provider's request limit for the whole job (0: none).")
        limits.add_argument("--tokens_per_minute", type=float, default=0.0,
                            help="The provider's token limit for the whole job (0: none).")
        limits.add_argument("--input_tokens_per_minute", type=float, default=0.0,
                            help="The provider's INPUT-token limit for the whole job (0: none; "
                            "Anthropic's ITPM: cache reads do not count). Any combination with "
                            "the other limits; the one that binds wins.")
        limits.add_argument("--output_tokens_per_minute", type=float, default=0.0,
                            help="The provider's OUTPUT-token limit for the whole job (0: none; "
                            "Anthropic's OTPM): --max_tokens is reserved per request, the rest "
                            "given back once the answer's usage is known.")
        limits.add_argument("--requests_per_day", type=float, default=0.0,
                            help="The provider's daily request cap for the whole job (0: none; "
                            "Gemini's RPD, reset at midnight Pacific time). Once it is used up "
                            "nothing more is sent: the rest become daily_limit dead letters "
                            "(replayable with --replay once the day resets).")
        limits.add_argument("--worker_share", type=float, default=None,
                            help="Fraction of the job's limits each worker process takes "
                            "(default: 1 / the number of worker processes the runner may run).")
        limits.add_argument("--rate_slice_secs", type=float, default=1.0,
                            help="The shortest window over which the provider enforces the "
                            "limits above (OpenAI: 1, a per-minute limit as per-second "
                            "slices): the limiter never sends more than that window's share "
                            "within it. 60 for a provider that enforces only the whole minute "
                            "(0.99 of the limit instead of 0.96-0.97); too long for one that "
                            "enforces slices means 429s. (A --shared_quota paces by its own rule.)")
        limits.add_argument("--max_retries", type=int, default=6,
                            help="Retries per ticket after the first attempt.")
        limits.add_argument("--initial_backoff_secs", type=float, default=0.5,
                            help="First retry's backoff ceiling (exponential, full jitter).")
        limits.add_argument("--max_backoff_secs", type=float, default=30.0,
                            help="Cap of any backoff.")
        limits.add_argument("--max_retry_after_secs", type=float, default=60.0,
                            help="Cap on the provider's retry-after.")
        limits.add_argument("--shared_quota", default=None, metavar="redis://HOST:PORT[/DB]",
                            help="Share ONE quota (the limits above, and --max_cost_usd as one "
                            "budget for the job) among every worker of every job that names the "
                            "same quota, through Redis (e.g. Memorystore); without Redis each "
                            "worker takes a static --worker_share. If Redis fails, workers fall "
                            "back to their share and return when it is back.")
        limits.add_argument("--quota_key", default=None, metavar="NAME",
                            help="Name of the shared quota (default: derived from --base_url, "
                            "--model and a fingerprint of the API key, never the key).")
        limits.add_argument("--quota_priority", default="normal",
                            choices=("high", "normal", "low"),
                            help="With --shared_quota: when the jobs on one quota together want "
                            "more than its limit, a higher priority is admitted first and a "
                            "lower one takes what is left (a live job high beside a backfill "
                            "normal). A job told a lower --requests_per_minute or "
                            "--tokens_per_minute than the quota's keeps to its own. high and low "
                            "need --shared_quota (the local limiter has no one to share with).")
        limits.add_argument("--max_outage_secs", type=float, default=900.0,
                            help="How long tickets wait for a provider that is down (circuit "
                            "breaker open, probed at growing intervals) before they become "
                            "provider_unavailable dead letters (replayable).")
        limits.add_argument("--max_ticket_secs", type=float, default=600.0,
                            help="Deadline per ticket, across all its attempts.")
        limits.add_argument("--dispatch", default="continuous", choices=("continuous", "barrier"),
                            help="continuous: keep max_concurrency in flight; barrier: finish "
                            "each batch before the next (a baseline for benchmarks).")

        money = parser.add_argument_group("pay once, resume, cost")
        money.add_argument("--response_store", default=None,
                           help="Directory (local or gs://) keeping every paid response by "
                           "request; looked up before each call, so nothing is paid twice "
                           "across bundle retries, crashes and reruns.")
        _switch(money, "--resume",
                "Skip ticket ids already in results under --output; new results go to new shards "
                "of this run.")
        _switch(money, "--replay",
                "--input is dead-letter files: re-run the tickets whose reason is retryable, "
                "budget_exhausted, daily_limit or interrupted; skip the others.")
        money.add_argument("--pricing_file", default=None,
                           help="JSON prices per model (USD per 1M input, cached input and "
                           "output tokens); default: the shipped transforms/pricing.json.")
        money.add_argument("--max_cost_usd", type=float, default=None,
                           help="Budget for the run: once reached no request is sent and the "
                           "rest become budget_exhausted dead letters (replayable).")
        _switch(money, "--estimate",
                "Read and validate the input, print tickets, tokens, projected cost and duration,"
                " and exit without calling the provider.")
        money.add_argument("--sample", type=int, default=None, metavar="N",
                           help="Answer only a deterministic sample of N valid tickets (the N "
                           "with the smallest hash of their id, spread over the whole input) and "
                           "project the full job's cost, duration and failures from them; "
                           "finish later with --resume and without --sample.")
        money.add_argument("--expected_completion_tokens", type=int, default=None,
                           help="Average completion tokens assumed by --estimate "
                           "(default: 60%% of --max_tokens).")

        batch = parser.add_argument_group("Batch API (half price, answered within 24 h)")
        batch.add_argument("--api", default="online", choices=("online", "batch"),
                           help="online: one request per ticket; batch: every ticket through "
                           "the provider's Batch API (50%% of the price, its own quota, "
                           "answered within 24 h), same outputs (docs/batch.md).")
        batch.add_argument("--batch_deadline_secs", type=float, default=0.0,
                           help="With --api batch: seconds after the batch job started after "
                           "which unfinished batches are cancelled (what they answered is kept) "
                           "and the rest is answered online (0: the provider's 24 h window).")
        batch.add_argument("--batch_cancel_wait_secs", type=float, default=600.0,
                           help="With --api batch: after --batch_deadline_secs, the longest a "
                           "cancelled batch may take to end (counted from its cancel; OpenAI "
                           "documents up to 10 minutes); then its tickets are answered online "
                           "and the summary says how many may be billed twice (0: no wait).")
        batch.add_argument("--batch_poll_secs", type=float, default=30.0,
                           help="With --api batch: seconds between two polls of the running "
                           "batches (one progress line each).")
        _switch(batch, "--batch_submit_only",
                "With --api batch: pack and submit the batches, then exit 0; the same command "
                "with --resume later waits for them and writes the results (for Dataflow).")
        batch.add_argument("--batch_max_enqueued_tokens", type=int, default=0,
                           help="With --api batch: the provider's enqueued-token limit for the "
                           "model; batches are submitted in waves that fit it (0: unknown, "
                           "learnt from token_limit_exceeded).")
        batch.add_argument("--batch_max_lines", type=int, default=50000,
                           help="With --api batch: most requests per batch (the provider's "
                           "limit: 50000 at OpenAI, 100000 at Anthropic).")

        run = parser.add_argument_group("run")
        _switch(run, "--simulate",
                "Start the bundled provider simulator in-process and use it (no API key needed).")
        run.add_argument("--simulator_flags", default="",
                         help="Flags for the simulator started by --simulate, as one string, "
                         "e.g. \"--latency_median_ms 200 --p_503 0.02\".")
        run.add_argument("--local_chunk_tickets", type=int, default=None, metavar="N",
                         help="On the local in-process runner, run the pipeline over "
                         "consecutive chunks of N input records, one after the other in one "
                         "process, so that memory stays flat whatever the input size (default: "
                         "50000; 0: the whole input in one pass). Not applied on other runners, "
                         "with multi_processing, --api batch, --sample or --replay "
                         "(docs/runners.md).")
        run.add_argument("--log_level", default="INFO",
                         choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="Logging level.")

        stream = parser.add_argument_group("streaming (docs/streaming.md)")
        stream.add_argument("--input_subscription", default=None,
                            help="Read tickets from this Pub/Sub subscription "
                            "(projects/P/subscriptions/S), one JSON ticket per message: a "
                            "streaming job (instead of --input).")
        _switch(stream, "--watch",
                "Streaming: read every file that lands under --input (a pattern, local or "
                "gs://), once, every --watch_interval_secs.")
        stream.add_argument("--watch_interval_secs", type=float, default=2.0,
                            help="How often --watch matches --input.")
        stream.add_argument("--output_topic", default=None,
                            help="Streaming: also publish each result to this Pub/Sub topic "
                            "(projects/P/topics/T; the result's JSON, attribute id).")
        stream.add_argument("--dead_letter_topic", default=None,
                            help="Streaming: also publish each dead letter to this topic.")
        stream.add_argument("--window_secs", type=float, default=60.0,
                            help="Streaming: results and dead letters are written to finished "
                            "files under --output at least this often.")

        watch = parser.add_argument_group("watching a run")
        _switch(watch, "--quiet",
                "No live progress (the summary is still printed).")
        watch.add_argument("--progress_interval_secs", type=float, default=10.0,
                           help="Seconds between two progress lines when stderr is not a "
                           "terminal (on a terminal a live bar is drawn instead).")
        watch.add_argument("--drain_secs", type=float, default=30.0,
                           help="After SIGINT/SIGTERM, how long requests in flight may take to "
                           "finish before they are cancelled (unsent tickets become dead letters "
                           "'interrupted' at once).")
        _switch(watch, "--skip_preflight",
                "Do not check the endpoint, the key and the model (GET /models) before the "
                "run; its first requests still stop a wrong base URL, model or key.")
        watch.add_argument("--log_format", default="text", choices=("text", "json"),
                           help="Log lines as key=value text or as JSON lines.")


def no_job_deadline(options: PipelineOptions) -> None:
    """Beam's portable runner reads the job's state and message streams with
    ``--job_server_timeout`` (300 s by default) as their gRPC deadline: at 5 minutes
    ``wait_until_finish`` fails a job that still runs ("Deadline Exceeded"). A job on a local
    job server gets a year unless the flag was changed, or names a job server of its own (one
    that does not answer must fail within the flag's time)."""
    portable = options.view_as(PortableOptions)
    if portable.job_server_timeout == 300 and not portable.job_endpoint:
        portable.job_server_timeout = 365 * 24 * 3600
