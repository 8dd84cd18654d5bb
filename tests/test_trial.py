"""The endpoint's trial: a wrong base URL, model or key costs a few requests and fails the job.

The decision (:class:`~transforms.limits.trial.EndpointTrial`) is tested alone; then in the flow
control with a fake caller and a fake clock (no HTTP, no sleeping); then the one line the driver
prints, from the error a runner reports.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.llm_fakes import FakeCaller, FakeClock, answer_text
from tests.llm_fakes import llm_config as _config
from transforms import errors
from transforms.limits.trial import (CONVICTED, ON_TRIAL, PROVEN, REFUSE, SEND, WAIT,
                                     EndpointTrial)
from transforms.llm.caller import Request
from transforms.llm.config import misconfigured_message
from transforms.llm.flow import CallTrace, FlowControl
from transforms.llm.providers.openai import error_for_status
from transforms.llm.stop import StopSignal

# -- the decision ---------------------------------------------------------------------------


def test_three_wrong_answers_and_no_success_convict_after_exactly_three_requests():
    trial = EndpointTrial()
    assert [trial.admit() for _ in range(4)] == [SEND, SEND, SEND, WAIT]
    assert trial.on_failure("not_found") is False
    # One counted: two more could convict, and two are in flight: nothing more goes.
    assert trial.admit() == WAIT
    assert trial.on_failure("auth_error") is False
    assert trial.on_failure("not_found") is True
    assert (trial.state, trial.failed, trial.admit()) == (CONVICTED, 3, REFUSE)
    assert trial.on_failure("not_found") is False  # convicted once


def test_one_success_ends_the_trial_for_good():
    trial = EndpointTrial()
    assert trial.admit() == SEND
    trial.on_success()
    assert trial.state == PROVEN
    sent = [trial.admit() for _ in range(100)]  # nothing held back any more
    assert set(sent) == {SEND}
    assert not any(trial.on_failure("not_found") for _ in range(100))
    assert trial.state == PROVEN


def test_one_tickets_404_among_the_first_then_a_success_convicts_nothing():
    trial = EndpointTrial()
    assert [trial.admit() for _ in range(3)] == [SEND] * 3
    assert trial.on_failure("not_found") is False
    trial.on_success()
    assert (trial.state, trial.admit()) == (PROVEN, SEND)


def test_other_failures_prove_nothing_and_free_their_place():
    trial = EndpointTrial(failures=2)
    for kind in ("server_error", "rate_limited", "timeout", "bad_request", "budget_exhausted",
                 "interrupted"):
        assert trial.admit() == SEND
        assert trial.on_failure(kind) is False
    assert (trial.state, trial.failed) == (ON_TRIAL, 0)
    assert [trial.admit(), trial.admit(), trial.admit()] == [SEND, SEND, WAIT]
    with pytest.raises(ValueError):
        EndpointTrial(failures=0)


def test_waiters_wake_at_the_next_outcome():
    async def scenario():
        trial = EndpointTrial(failures=1)
        assert trial.admit() == SEND
        waiter = asyncio.ensure_future(trial.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        trial.on_success()
        await asyncio.wait_for(waiter, 1)
        return trial.admit()

    assert asyncio.run(scenario()) == SEND


# -- in the flow control ---------------------------------------------------------------------

def _request(text):
    return Request({"model": "m", "messages": [{"role": "user", "content": text}],
                    "max_tokens": 50})


def _answer_all(flow, clock, texts):
    """Answers every text at once; returns each one's answer text or error."""
    async def one(text):
        try:
            return (await flow.answer(_request(text), CallTrace(clock() + 600, text))
                    ).completion.content
        except errors.ProviderError as exc:
            return exc

    async def go():
        await flow.start()
        return await asyncio.gather(*(one(t) for t in texts))

    return asyncio.run(go())


def _flow(script, **config):
    clock = FakeClock()
    caller = FakeCaller(script)
    flow = FlowControl(_config(max_concurrency=32, **config), caller, StopSignal(), clock=clock,
                       wall=lambda: 1.7e9, sleep=clock.sleep)
    return flow, caller, clock


def test_flow_a_wrong_path_costs_three_requests_and_names_base_url():
    def script(params, n):
        raise errors.NotFound("Invalid URL (POST /nope/v1/chat/completions)", status=404)

    flow, caller, clock = _flow(script, base_url="http://h:1/nope/v1")
    outcomes = _answer_all(flow, clock, [f"t{i}" for i in range(40)])
    assert len(caller.calls) == 3
    assert [type(o) for o in outcomes].count(errors.NotFound) == 3
    refused = [o for o in outcomes if isinstance(o, errors.JobMisconfigured)]
    assert len(refused) == 37 and refused[0].reason == "misconfigured"
    line = flow.misconfigured
    assert refused[0].message == line
    assert line.startswith("the endpoint http://h:1/nope/v1 has no chat completions route")
    assert "check --base_url" in line and "Invalid URL (POST /nope/v1" in line
    assert "\n" not in line


def test_flow_a_wrong_model_names_model():
    def script(params, n):
        raise errors.ModelNotFound("The model `gpt-5-typo` does not exist", status=404,
                                   code="model_not_found")

    flow, caller, clock = _flow(script, model="gpt-5-typo")
    _answer_all(flow, clock, [f"t{i}" for i in range(10)])
    assert len(caller.calls) == 3
    assert "does not serve the model 'gpt-5-typo'" in flow.misconfigured
    assert flow.misconfigured.endswith("check --model.")


def test_flow_a_404_after_a_success_is_the_tickets_own():
    def script(params, n):
        if n > 1:  # the first request succeeds, every later one is a 404
            raise errors.NotFound("no such thing", status=404)
        return answer_text(params)

    flow, caller, clock = _flow(script)

    async def go():
        await flow.start()
        first = await flow.answer(_request("first"), CallTrace(clock() + 600))
        later = []
        for i in range(10):
            with pytest.raises(errors.NotFound) as caught:
                await flow.answer(_request(f"t{i}"), CallTrace(clock() + 600))
            later.append(caught.value)
        return first, later

    first, later = asyncio.run(go())
    assert first.completion.content == "tsrif" and len(later) == 10
    assert flow.misconfigured is None and len(caller.calls) == 11


def test_flow_server_errors_before_any_success_do_not_convict():
    def script(params, n):
        if n <= 5:
            raise errors.ServerError("down", status=503)
        return answer_text(params)

    flow, caller, clock = _flow(script)
    outcomes = _answer_all(flow, clock, [f"t{i}" for i in range(8)])
    assert flow.misconfigured is None and flow.trial.state == PROVEN
    assert all(isinstance(o, str) for o in outcomes)


# -- the line ------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code", "message", "cls"), [
    (404, "model_not_found", "The model `x` does not exist or you do not have access to it.",
     errors.ModelNotFound),
    (404, None, "The model `x` does not exist.", errors.ModelNotFound),  # vLLM
    (404, None, 'model "x" not found, try pulling it first', errors.ModelNotFound),  # Ollama
    (404, None, "Invalid URL (POST /v1/chat/completion)", errors.NotFound),
    (404, None, "Not Found", errors.NotFound),
])
def test_a_404_is_the_model_or_the_path(status, code, message, cls):
    assert error_for_status(status, code, message) is cls


def test_the_line_names_the_key_variable_and_never_the_providers_words():
    config = _config(api_key_env="MY_KEY", base_url="http://h/v1")
    line = misconfigured_message(config, errors.AuthFailed(
        "Incorrect API key provided: sk-abc***xyz", status=401), "the first 3 requests")
    assert "rejected the API key (HTTP 401" in line and "set MY_KEY" in line
    assert "sk-" not in line
    line = misconfigured_message(config, errors.AuthFailed("no", status=403), "POST /x")
    assert "(HTTP 403 on POST /x)" in line and "MY_KEY" in line


def test_the_driver_finds_the_line_in_what_a_runner_raises():
    line = "the endpoint http://h/v1 has no chat completions route (...): check --base_url."
    # The in-process runner re-raises our error with the step appended.
    ours = errors.JobMisconfigured(line + " [while running 'CallModel/CallModelWithRetries']")
    assert errors.misconfiguration(ours) == line
    # Remote runners report the worker's traceback as text.
    remote = RuntimeError("Traceback (most recent call last):\n  File \"dofn.py\", line 9\n"
                          f"transforms.errors.JobMisconfigured: {line} [while running 'A']\n")
    assert errors.misconfiguration(remote) == line
    wrapped = RuntimeError("bundle failed")
    wrapped.__cause__ = errors.JobMisconfigured(line)
    assert errors.misconfiguration(wrapped) == line
    assert errors.misconfiguration(RuntimeError("NotFound: boom")) is None
