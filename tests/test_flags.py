"""Unknown flags are errors before any work: pipeline/flags.py over many argv shapes, and the
driver end to end (exit 2, one line on stderr, nothing written).

The unit tests parse argv only (no pipeline, no network); the two end-to-end tests run
``python -m pipeline`` in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import flags
from pipeline.options import TicketflowOptions
from tests.conftest import EXAMPLES as EXAMPLE_FILES
from tests.conftest import REPO
from tests.test_templates import EXAMPLES as LAUNCHER_VALUES
from tests.test_templates import PARAMETERS

TICKETS = str(EXAMPLE_FILES / "tickets.jsonl")


def _consumed_by_beam_parser(argv):
    """Every token is taken by the parser (no bad value sent the scan to its fallback)."""
    return flags.build_parser().parse_known_args(argv)[1] == []


# --- what must keep working ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_every_template_parameter_in_launcher_form_passes(name):
    for value in LAUNCHER_VALUES[name]:
        argv = [f"--{name}={value}"]
        assert flags.flag_error(argv) is None, argv
        assert _consumed_by_beam_parser(argv), argv


def test_all_template_parameters_together_pass():
    argv = [f"--{name}={values[0]}" for name, values in sorted(LAUNCHER_VALUES.items())]
    assert len(argv) == len(PARAMETERS)
    assert flags.flag_error(argv) is None
    assert _consumed_by_beam_parser(argv)


RUNNER_ARGVS = [
    ["--runner", "DirectRunner", "--direct_num_workers", "2",
     "--direct_running_mode", "multi_processing"],
    ["--runner=FnApiRunner", "--direct_num_workers=0", "--direct_running_mode=multi_threading"],
    ["--runner", "PrismRunner", "--prism_location", "/opt/prism", "--environment_type", "LOOPBACK"],
    ["--runner", "FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
     "--flink_job_server_jar", "job-server.jar", "--parallelism", "1"],
    ["--runner", "SparkRunner", "--spark_master_url", "local[2]"],
    ["--runner", "PortableRunner", "--job_endpoint", "127.0.0.1:8099",
     "--environment_type", "DOCKER", "--environment_config", "img:1"],
    ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
     "--project", "tf-dry-project", "--region", "us-central1", "--temp_location", "gs://b/tmp",
     "--staging_location", "gs://b/staging", "--max_num_workers", "4", "--num_workers=2",
     "--machine_type", "n2-standard-4", "--worker_machine_type=n2-standard-2",
     "--sdk_container_image", "us-docker.pkg.dev/p/r/ticketflow:2.77.0",
     "--service_account_email", "sa@p.iam.gserviceaccount.com", "--setup_file", "./setup.py",
     "--requirements_file=req.txt", "--experiments=use_runner_v2", "--experiment", "a,b",
     "--dataflow_service_options=enable_prime", "--job_name", "tf-1", "--labels", "team=ml",
     "--no_use_public_ips", "--subnetwork", "regions/r/subnetworks/s", "--save_main_session",
     "--autoscaling_algorithm", "THROUGHPUT_BASED", "--dataflow_kms_key", "k",
     "--template_location", "gs://b/t.json", "--update", "--streaming",
     "--enable_streaming_engine", "--worker_region", "europe-west1"],
    ["--runner", "TestDataflowRunner", "--on_success_matcher", "m", "--wait_until_finish_duration",
     "1000"],
    ["--runtime_type_check", "--no_pipeline_type_check", "--type_check_strictness", "ALL_REQUIRED",
     "--pickle_library", "cloudpickle", "--profile_cpu", "--profile_location", "gs://b/p"],
]


@pytest.mark.parametrize("argv", RUNNER_ARGVS, ids=lambda a: a[1].split("=")[-1] if len(a) > 1
                         else a[0])
def test_beam_runner_flags_pass(argv):
    assert flags.flag_error(["--input", TICKETS, *argv]) is None


@pytest.mark.parametrize("argv", [
    ["--simulator_flags", "--p_503 0.1"],                  # one argv element, starts with --
    ["--simulator_flags", "--latency_median_ms 200 --p_503 0.02 --seed -3"],
    ["--simulator_flags=--p_503=0.1"],
    ["--simulate", "--simulator_flags", "--rpm 60", "--quiet"],
    ["--system_prompt", "-- reply briefly --"],
    ["--temperature", "-1", "--max_retries", "-2", "--worker_share=-0.5"],  # negative values
    ["--max_cost_usd", "-.5"],
    ["--overwrite", "--resume=false", "--estimate=true", "--skip_preflight"],
    ["--help"],
    ["-h"],
    [],
])
def test_values_and_forms_that_pass(argv):
    assert flags.flag_error(["--input", TICKETS, *argv]) is None


# --- mistakes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,flag,suggestion", [
    (["--reqests_per_minute", "60"], "--reqests_per_minute", "--requests_per_minute"),
    (["--reqests_per_minute=60"], "--reqests_per_minute", "--requests_per_minute"),
    (["--batchsize", "5"], "--batchsize", "--batch_size"),
    (["--simulate_flags", "--p_503 0.1"], "--simulate_flags", "--simulator_flags"),
    (["--max-concurrency", "8"], "--max-concurrency", "--max_concurrency"),
    (["--direct_num_worker", "2"], "--direct_num_worker", "--direct_num_workers"),
    (["--temp_locaton", "gs://x"], "--temp_locaton", "--temp_location"),
    (["--runner", "DataflowRunner", "--max_num_worker=4"], "--max_num_worker",
     "--max_num_workers"),
    (["--enviroment_type", "LOOPBACK"], "--enviroment_type", "--environment_type"),
])
def test_misspelled_flags_get_a_suggestion(argv, flag, suggestion):
    assert flags.unknown_flags(["--input", TICKETS, *argv]) == [(flag, suggestion)]
    assert (flags.flag_error(["--input", TICKETS, *argv])
            == f"unknown flag {flag}: did you mean {suggestion}?")


def test_an_abbreviation_is_unknown_because_beam_drops_it():
    # Beam's parsers disable abbreviations: the limit would silently not apply.
    dropped = PipelineOptions(["--requests_per_min", "60"]).view_as(TicketflowOptions)
    assert dropped.requests_per_minute == 0.0
    assert flags.unknown_flags(["--requests_per_min", "60"]) == [
        ("--requests_per_min", "--requests_per_minute")]


def test_nothing_close_says_how_to_list_the_flags():
    assert flags.flag_error(["--zzqx", "1"]) == (
        "unknown flag --zzqx (python -m pipeline --help lists the flags)")
    assert flags.unknown_flags(["-q"]) == [("-q", None)]


def test_several_unknown_flags_make_one_line_each_named_once():
    message = flags.flag_error(["--zzqx", "--batchsize", "5", "--zzqx", "--temp_locaton=gs://x"])
    assert message == ("unknown flags --zzqx, --batchsize (did you mean --batch_size?), "
                       "--temp_locaton (did you mean --temp_location?); "
                       "python -m pipeline --help lists the flags")
    assert "\n" not in message


def test_a_typo_is_found_even_when_another_value_is_bad():
    # "abc" makes argparse fail; Beam reports that itself, the typo must not hide behind it.
    assert flags.unknown_flags(["--direct_num_workers", "abc", "--reqests_per_minute", "5"]) == [
        ("--reqests_per_minute", "--requests_per_minute")]


@pytest.mark.parametrize("argv,message", [
    (["--input", "a.jsonl", "b.jsonl"],
     "unexpected argument 'b.jsonl' after --input a.jsonl: a flag takes one value "
     "(quote globs; join several paths with commas)"),
    (["--streaming", "false"],
     "unexpected argument 'false' after --streaming: a flag takes one value "
     "(quote globs; join several paths with commas)"),
    (["--input", "a.jsonl", "--", "--batch_size", "5"],
     "unexpected argument '--' after --input a.jsonl: everything after it would be ignored"),
])
def test_values_no_flag_takes_are_errors(argv, message):
    assert flags.flag_error(argv) == message


def test_one_dash_led_element_after_a_flag_that_takes_a_value_is_its_value():
    # argparse rejects it (TicketflowOptions reports "expected one argument"); it is no flag.
    assert flags.scan(["--simulator_flags", "--p_503"]) == flags.Scan((), (), False)
    assert flags.unknown_flags(["--simulator_flags", "--no_such_flag", "--batchsize", "5"]) == [
        ("--batchsize", "--batch_size")]


def test_a_stray_value_is_redacted():
    message = flags.flag_error(["--no_auth", "sk-proj-0123456789abcdef"])
    assert "0123456789" not in message and "[REDACTED]" in message


def test_job_server_runners_keep_their_own_flags_but_not_typos():
    # The Flink job server describes Java options (checkpointing_interval, ...) at submission.
    flink = ["--runner", "FlinkRunner", "--flink_master=[local]"]
    assert flags.flag_error([*flink, "--checkpointing_interval", "1000", "--object_reuse",
                             "true", "--state_backend=rocksdb"]) is None
    assert flags.scan(flink).job_server_runner
    assert flags.unknown_flags([*flink, "--reqests_per_minute", "5"]) == [
        ("--reqests_per_minute", "--requests_per_minute")]
    assert not flags.scan(["--runner", "DataflowRunner"]).job_server_runner
    assert flags.unknown_flags(["--runner", "DataflowRunner", "--checkpointing_interval", "9"])


def test_options_a_runner_module_declares_are_known_once_it_is_chosen():
    # A fresh process: RenderOptions joins Beam's registry only when its module is imported.
    code = ("from pipeline.flags import flag_error\n"
            "print(flag_error(['--render_output', 'g.svg']))\n"
            "print(flag_error(['--runner', 'apache_beam.runners.render.RenderRunner',"
            " '--render_output', 'g.svg']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    before, after = proc.stdout.strip().splitlines()
    assert before.startswith("unknown flag --render_output")
    assert after == "None"


# --- end to end --------------------------------------------------------------------------------

@pytest.mark.parametrize("typo,expected", [
    (["--reqests_per_minute", "60"],
     "ticketflow: error: unknown flag --reqests_per_minute: did you mean --requests_per_minute?"),
    (["--direct_num_worker", "2"],
     "ticketflow: error: unknown flag --direct_num_worker: did you mean --direct_num_workers?"),
])
def test_driver_exits_2_with_one_line_and_writes_nothing(run_pipeline, typo, expected):
    result = run_pipeline("--input", TICKETS, "--simulate", "--quiet", *typo, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [expected]
    assert result.stdout == ""
    assert not result.output.exists()
