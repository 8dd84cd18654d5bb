"""The Flex Template agrees with the code: metadata.json ⇄ TicketflowOptions, one Beam version,
a Dockerfile that follows the one-image pattern, and a pipeline that translates to a Dataflow job.

Nothing here needs network, Docker or Google credentials: the Dockerfile is checked statically,
and the Dataflow translation runs with ``--dry_run`` (Beam's DataflowRunner builds the job and
returns before creating an API client or staging anything).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import config as config_lib
from pipeline import run as run_lib
from pipeline.options import TicketflowOptions
from transforms import secrets

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
METADATA = json.loads((TEMPLATES / "metadata.json").read_text(encoding="utf-8"))
PARAMETERS = {p["name"]: p for p in METADATA["parameters"]}

# Options deliberately NOT offered by the template, and why.
EXCLUDED = {
    "simulate": "starts a simulator inside the launcher; Dataflow workers cannot reach it",
    "simulator_flags": "only meaningful with --simulate",
    "estimate": "prints a projection and exits without a job; run it locally, not as a template",
    "expected_completion_tokens": "only read by --estimate",
    "quiet": "live progress is drawn by a local driver only; Dataflow shows its own UI",
    "progress_interval_secs": "live progress is drawn by a local driver only",
    "drain_secs": "graceful stop with drain is for local runs; on Dataflow use drain in its UI",
    "local_chunk_tickets": "chunks only the local in-process runner; Dataflow's shuffle spills",
}

# Parameters the template offers before the option exists (proposed in issue 6's report). Their
# tests are strict xfails: once the option lands they XPASS and fail, so remove them from here.
PENDING: dict = {}

# Flags whose explicit-value form (``--name=value``, what the Flex Template launcher passes)
# the options do not parse yet. Same strict-xfail rule as PENDING.
PENDING_EXPLICIT_VALUE: dict = {}

# Values an operator types, per parameter: each must pass the regex AND parse as the option.
EXAMPLES = {
    "input": ["gs://my-bucket/tickets/*.jsonl", "gs://my-bucket/a.parquet,gs://other_b/x/*.jsonl",
              "gs://tf-dry-bucket/in/2024-01-*.jsonl.gz"],
    "output": ["gs://my-bucket/ticketflow/run1", "gs://my-bucket/out/"],
    "input_format": ["auto", "jsonl", "parquet"],
    "output_format": ["jsonl", "parquet"],
    "overwrite": ["true", "false"],
    "id_field": ["id", "ticket_id", "meta.id"],
    "text_field": ["body", "description"],
    "subject_field": ["subject", "title"],
    "max_input_chars": ["20000", "1"],
    "key_field": ["priority", "customer_tier"],
    "num_key_shards": ["16", "1"],
    "batch_size": ["50", "1", "500"],
    "max_buffering_secs": ["0", "5", "2.5"],
    "input_subscription": ["projects/my-project/subscriptions/tickets",
                           "projects/tf-dry-project/subscriptions/live-tickets"],
    "watch": ["true", "false"],
    "provider": ["openai", "anthropic", "gemini"],
    "prompt_cache": ["on", "off"],
    "cache_ttl": ["5m", "1h"],
    "watch_interval_secs": ["2", "0.5"],
    "output_topic": ["projects/my-project/topics/answers"],
    "dead_letter_topic": ["projects/my-project/topics/ticket-dead-letters"],
    "window_secs": ["60", "5"],
    "base_url": ["https://llm.internal.example/v1", "http://10.0.0.7:8000/v1"],
    "endpoints": ["examples/endpoints.yaml", "gs://b/endpoints.yml"],
    "api_key_secret": ["projects/my-project/secrets/openai-key/versions/latest",
                       "projects/123456789012/secrets/OPENAI_KEY/versions/3"],
    "api_key_env": ["OPENAI_API_KEY", "LLM_KEY_2"],
    "model": ["gpt-4o-mini", "gpt-4.1", "meta-llama/Llama-3.1-8B-Instruct", "org/model:v2@1"],
    "system_prompt": ["You are a helpful support agent.", "Reply in French.\nBe brief."],
    "temperature": ["0", "0.7", "1", "2", "2.0", ".5"],
    "max_tokens": ["256", "1"],
    "request_timeout_secs": ["60", "7.5"],
    "max_concurrency": ["32", "1"],
    "requests_per_minute": ["0", "500", "10000.5"],
    "tokens_per_minute": ["0", "200000"],
    "input_tokens_per_minute": ["0", "400000"],
    "output_tokens_per_minute": ["0", "80000"],
    "requests_per_day": ["0", "1500"],
    "worker_share": ["1", "0.25", ".5", "1.0"],
    "rate_slice_secs": ["1", "60", "0.5", "10"],
    "max_retries": ["0", "6"],
    "initial_backoff_secs": ["0.5", "0", "1"],
    "max_backoff_secs": ["30", "0.1"],
    "max_retry_after_secs": ["60"],
    "max_ticket_secs": ["600", "90.5"],
    "dispatch": ["continuous", "barrier"],
    "log_level": ["DEBUG", "INFO", "WARNING", "ERROR"],
    "log_format": ["text", "json"],
    "skip_preflight": ["true", "false"],
    "response_store": ["gs://my-bucket/ticketflow/store"],
    "resume": ["true", "false"],
    "replay": ["true", "false"],
    "pricing_file": ["gs://my-bucket/pricing.json", "/template/pricing.json"],
    "prompt_template": ["gs://my-bucket/triage_template.j2", "/template/prompt.j2"],
    "prompt_prefix_file": ["gs://my-bucket/policy_manual.md", "/template/examples.txt"],
    "response_schema": ["gs://my-bucket/triage_schema.json", "/template/schema.json"],
    "max_cost_usd": ["25", "0.5"],
    "sample": ["50", "1000"],
    "api": ["online", "batch"],
    "batch_deadline_secs": ["0", "3600", "90.5"],
    "batch_cancel_wait_secs": ["600", "0", "20.5"],
    "batch_poll_secs": ["30", "0.5"],
    "batch_submit_only": ["true", "false"],
    "batch_max_enqueued_tokens": ["0", "2000000"],
    "batch_max_lines": ["50000", "1", "1000", "100000"],
    "shared_quota": ["redis://10.0.0.3:6379/0", "rediss://:pw@quota.internal:6378"],
    "quota_key": ["openai-prod", "team|gpt-4o-mini"],
    "quota_priority": ["high", "normal", "low"],
    "max_outage_secs": ["900", "0", "60.5"],
}

# Values the regexes must refuse (a regex that accepts anything checks nothing).
COUNTER_EXAMPLES = {
    "input": ["tickets.jsonl", "/data/t.jsonl", "gs://", "gs://b/x.jsonl, gs://b/y.jsonl"],
    "output": ["out/run1", "s3://bucket/out", "gs://b/a,gs://b/c"],
    "input_format": ["csv", "JSONL"],
    "output_format": ["avro"],
    "overwrite": ["yes", "1"],
    "id_field": ["1id", "my id", ""],
    "max_input_chars": ["0", "-5", "1e4"],
    "batch_size": ["0", "ten", "5.5"],
    "max_buffering_secs": ["-1", "abc"],
    "input_subscription": ["tickets", "projects/p/topics/tickets", "projects/my-project/subscriptions/"],
    "output_topic": ["answers", "projects/my-project/subscriptions/answers"],
    "dead_letter_topic": ["projects/my-project/topics/"],
    "window_secs": ["-1", "1m"],
    "provider": ["claude", "OpenAI"],
    "cache_ttl": ["10m", "1d"],
    "base_url": ["llm.internal/v1", "ftp://x"],
    "endpoints": ["endpoints.json", "a b.yaml"],
    "api_key_secret": ["openai-key", "projects/p/secrets/s", "projects/my-project/secrets/k/versions/0",
                       "projects/my-project/secrets/k/versions/latest/extra"],
    "api_key_env": ["1KEY", "MY-KEY"],
    "model": ["", " gpt", "-x"],
    "temperature": ["2.5", "3", "-0.1"],
    "worker_share": ["0", "1.5", "2"],
    "rate_slice_secs": ["0", "61", "-1", "1s"],
    "max_retries": ["-1", "1.5"],
    "dispatch": ["parallel"],
    "log_level": ["info", "TRACE"],
    "response_store": ["store/", "s3://b/store"],
    "resume": ["yes"],
    "max_cost_usd": ["-1", "$5"],
    "sample": ["0", "-3", "1.5", "ten"],
    "api": ["Batch", "async"],
    "batch_deadline_secs": ["-1", "1h"],
    "batch_cancel_wait_secs": ["-1", "10m"],
    "batch_submit_only": ["yes"],
    "batch_max_enqueued_tokens": ["-5", "2e6"],
    "batch_max_lines": ["0", "1000000", "-1"],
    "shared_quota": ["10.0.0.3:6379", "http://redis:6379", "redis://a b"],
    "quota_key": ["has space", "x{y}"],
    "quota_priority": ["High", "urgent", ""],
    "max_outage_secs": ["-1", "forever"],
}


def _option_actions():
    """TicketflowOptions' argparse actions, by dest (only ours, not Beam's standard options)."""
    import argparse

    parser = argparse.ArgumentParser()
    TicketflowOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return {a.dest: a for a in parser._actions if a.dest != "help"}  # pylint: disable=protected-access


ACTIONS = _option_actions()


def _regex(name: str) -> re.Pattern:
    (pattern,) = PARAMETERS[name]["regexes"]
    return re.compile(pattern)


def _pending_param(name: str, table: dict):
    marks = ([pytest.mark.xfail(strict=True, reason=table[name])] if name in table else [])
    return pytest.param(name, marks=marks, id=name)


# ------------------------------------------------------------------ metadata ⇄ options

def test_every_option_is_a_parameter_or_excluded():
    missing = sorted(set(ACTIONS) - set(PARAMETERS) - set(EXCLUDED))
    assert not missing, f"options missing from templates/metadata.json: {missing}"
    assert not set(EXCLUDED) & set(PARAMETERS), "an excluded option is in metadata.json"
    assert set(EXCLUDED) <= set(ACTIONS), "EXCLUDED names an option that does not exist"


@pytest.mark.parametrize("name", [_pending_param(n, PENDING) for n in PARAMETERS])
def test_every_parameter_is_an_option(name):
    assert name in ACTIONS, f"metadata.json parameter {name!r} is not a TicketflowOptions flag"


def test_parameters_are_well_formed():
    assert METADATA["name"] and METADATA["description"]
    names = [p["name"] for p in METADATA["parameters"]]
    assert len(names) == len(set(names)), "duplicate parameter names"
    for param in METADATA["parameters"]:
        assert set(param) <= {"name", "label", "helpText", "isOptional", "regexes", "paramType"}
        assert param["label"].strip() and param["helpText"].strip(), param["name"]
        assert isinstance(param["isOptional"], bool), param["name"]
        assert len(param.get("regexes", [])) == 1, f"{param['name']}: give exactly one regex"
        pattern = param["regexes"][0]
        assert pattern.startswith("^") and pattern.endswith("$"), param["name"]
        # Dataflow checks parameters with Java regexes: keep to the common subset (no lookaround,
        # no backreferences, no named groups).
        assert not re.search(r"\(\?[=!<P]|\\[1-9]", pattern), f"{param['name']}: {pattern}"


def test_required_parameters_are_the_required_flags():
    required = {p["name"] for p in METADATA["parameters"] if not p["isOptional"]}
    # from_options refuses to run without --output, and without --input unless the job reads
    # --input_subscription (a streaming job); nothing else is mandatory.
    assert required == {"output"}


def test_every_parameter_has_examples_and_they_match():
    assert set(EXAMPLES) == set(PARAMETERS), "keep EXAMPLES in step with metadata.json"
    for name, values in EXAMPLES.items():
        regex = _regex(name)
        for value in values:
            assert regex.match(value), f"{name}: regex refuses documented example {value!r}"


def test_regexes_refuse_counter_examples():
    for name, values in COUNTER_EXAMPLES.items():
        regex = _regex(name)
        for value in values:
            assert not regex.match(value), f"{name}: regex accepts bad value {value!r}"


def test_defaults_and_choices_match_regexes():
    for name in PARAMETERS:
        action = ACTIONS.get(name)
        if action is None:
            continue
        regex = _regex(name)
        if action.default not in (None, False, "") and not isinstance(action.default, bool):
            value = action.default
            text = (f"{value:g}" if isinstance(value, float) else str(value))
            assert regex.match(text), f"{name}: regex refuses the default {text!r}"
        for choice in action.choices or ():
            assert regex.match(choice), f"{name}: regex refuses choice {choice!r}"
        assert not regex.match("not-a-choice") or not action.choices, name


def test_help_text_states_the_default():
    for name, param in PARAMETERS.items():
        action = ACTIONS.get(name)
        if action is None or action.default in (None, "", False):
            continue
        value = action.default
        text = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"Default: {text}." in param["helpText"], f"{name}: say 'Default: {text}.'"


@pytest.mark.parametrize("name", [_pending_param(n, {**PENDING, **PENDING_EXPLICIT_VALUE})
                                  for n in PARAMETERS])
def test_examples_parse_as_the_launcher_passes_them(name):
    # The Python Flex Template launcher passes each parameter as --name=value.
    for value in EXAMPLES[name]:
        options = PipelineOptions([f"--{name}={value}"]).view_as(TicketflowOptions)
        parsed = getattr(options, name)
        assert parsed is not None, f"--{name}={value!r} did not set the option"


def test_secret_regex_is_the_code_s_regex():
    assert PARAMETERS["api_key_secret"]["regexes"][0] == secrets.SECRET_VERSION_PATTERN.pattern


# ------------------------------------------------------------------ one Beam version

def _setup_beam_version() -> str:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "BEAM_VERSION"
                                                 for t in node.targets)):
            return node.value.value
    raise AssertionError("setup.py has no BEAM_VERSION = '...'")


def _requirements() -> dict:
    pins = {}
    for line in (TEMPLATES / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([A-Za-z0-9_.\-]+)", line)
            assert match, f"templates/requirements.txt: pin exactly (name==version): {line!r}"
            pins[match.group(1).lower()] = (match.group(2), match.group(3))
    return pins


def _dockerfile() -> str:
    return (TEMPLATES / "Dockerfile").read_text(encoding="utf-8")


def test_beam_version_is_one_version():
    version = _setup_beam_version()
    extras, pinned = _requirements()["apache-beam"]
    assert extras == "[gcp]" and pinned == version
    images = re.findall(r"^FROM\s+apache/beam_python(3\.\d+)_sdk:(\S+)", _dockerfile(), re.MULTILINE)
    assert images == [("3.11", version)], images
    assert beam.__version__ == version, "the venv runs another Beam than setup.py pins"


def test_requirements_pin_every_install_requirement():
    import setuptools

    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        source = (REPO / "setup.py").read_text(encoding="utf-8")
        exec(compile(source, str(REPO / "setup.py"), "exec"), {"__name__": "setup_check"})  # noqa: S102
    finally:
        setuptools.setup = original
    pins = _requirements()
    for requirement in captured["install_requires"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()
        assert name in pins, f"{name} (setup.py) is not pinned in templates/requirements.txt"


def test_dockerfile_follows_the_one_image_pattern():
    text = _dockerfile()
    assert re.search(r"^FROM gcr\.io/dataflow-templates-base/python311-template-launcher-base"
                     r"\S* AS (\w+)", text, re.MULTILINE)
    stage = re.search(r"AS (\w+)", text).group(1)
    assert re.search(rf"^COPY --from={stage} /opt/google/dataflow/python_template_launcher "
                     r"/opt/google/dataflow/python_template_launcher$", text, re.MULTILINE)
    env = dict(re.findall(r'^ENV (\w+)="?([^"\n]*)"?$', text, re.MULTILINE))
    workdir = re.search(r"^ARG WORKDIR=(\S+)", text, re.MULTILINE).group(1)
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"].replace("${WORKDIR}", workdir) == f"{workdir}/main.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"].replace("${WORKDIR}", workdir) == \
        f"{workdir}/setup.py"
    assert env.get("PIP_NO_DEPS") == "True"
    run = " ".join(re.findall(r"^RUN (.*)$", text.replace("\\\n", " "), re.MULTILINE))
    assert "-r requirements.txt" in run and "pip install --no-cache-dir ." in run
    assert "pip check" in run
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE))
    packages = {"pipeline", "transforms", "simulator"}
    assert packages | {"setup.py", "templates/main.py", "templates/requirements.txt"} <= copied
    # Benchmarks and dev tools are not what workers or the launcher run.
    assert not {"benchmarks", "tools"} & copied
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text


def test_launcher_is_thin_and_runs_pipeline_run():
    tree = ast.parse((TEMPLATES / "main.py").read_text(encoding="utf-8"))
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert any(isinstance(n, ast.ImportFrom) and n.module == "pipeline.run"
               and [a.name for a in n.names] == ["run"] for n in imports)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not functions, "templates/main.py only calls pipeline.run.run()"


def test_readme_has_the_build_and_run_commands():
    text = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    assert "gcloud dataflow flex-template build" in text
    assert "gcloud dataflow flex-template run" in text
    for needed in ("--metadata-file", "--sdk-language PYTHON", "sdk_container_image",
                   "max_num_workers", "--region", "service-account-email", "api_key_secret",
                   "worker_processes"):
        assert needed in text, f"templates/README.md does not mention {needed}"
    # Every parameter named in the run example is a real parameter.
    for name in re.findall(r"--parameters[= ]([a-z_]+)=", text):
        assert name in PARAMETERS or name in ("sdk_container_image",), name


# ------------------------------------------------------------------ Dataflow translation

DRY_RUN_ARGV = [
    "--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location", "container",
    "--project", "tf-dry-project", "--region", "us-central1",
    "--temp_location", "gs://tf-dry-bucket/tmp", "--input", "gs://tf-dry-bucket/in/*.jsonl",
    "--output", "gs://tf-dry-bucket/out", "--base_url", "http://127.0.0.1:1/v1",
    "--max_num_workers", "4", "--machine_type", "n2-standard-4", "--requests_per_minute", "600",
    "--sdk_container_image", "us-docker.pkg.dev/tf-dry-project/ticketflow/ticketflow:2.77.0",
]


def test_pipeline_translates_to_a_dataflow_job_offline():
    # --dry_run: DataflowRunner.run_pipeline builds apiclient.Job(options, proto) and returns a
    # PipelineResult carrying it, before DataflowApplicationClient or any staging/upload.
    options = PipelineOptions(DRY_RUN_ARGV)
    config = config_lib.from_options(options)
    # 4 workers x 4 vCPUs = 16 SDK processes, each allowed 1/16 of 600 requests per minute.
    assert config.worker_processes == 16
    assert config.llm.worker_requests_per_sec == pytest.approx(600 / 16 / 60)
    pipeline = beam.Pipeline(options=options)
    run_lib.build(pipeline, config)
    result = pipeline.run()
    job = result.job
    assert job.proto.name and job.proto.type_.name == "JOB_TYPE_BATCH"
    assert job.google_cloud_options.project == "tf-dry-project"
    assert job.google_cloud_options.region == "us-central1"
    labels = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in ("ReadTickets", "ValidateTickets", "BatchTickets", "CallModel",
                 "CallModel/CallModelWithRetries", "AllDeadLetters", "WriteResults",
                 "WriteDeadLetters"):
        assert step in labels, f"{step} missing from the Dataflow job"
    images = {env.payload for env in job.proto_pipeline.components.environments.values()}
    assert any(b"ticketflow:2.77.0" in payload for payload in images), \
        "the job's workers must run the template's image"
    # The job must carry no key: nothing key-shaped in the whole job description.
    assert "sk-" not in json.dumps(type(job.proto).to_dict(job.proto), default=str)
