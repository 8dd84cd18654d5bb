"""Small fakes for the LLM layers' unit tests: a scripted caller, a fake clock, a fake layer.

Picklable (module-level), so ``CallModel(config, caller_factory=fake_factory)`` runs under
``TestPipeline`` without HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

from transforms import errors
from transforms.llm.caller import Answer, Completion
from transforms.llm.config import LlmConfig
from transforms.llm.providers.openai import limit_headers
from transforms.retry import RetryPolicy


class FakeClock:
    """A monotonic clock and an async sleep that moves it instead of waiting."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.now += secs
        await asyncio.sleep(0)


def llm_config(**overrides) -> LlmConfig:
    """A config for the layer tests: a fake endpoint, 4 in flight, 3 retries from 1 s, seed 1."""
    base = dict(base_url="http://fake/v1", public_api_key="k", max_concurrency=4,
                retry=RetryPolicy(max_retries=3, initial_backoff_secs=1, max_backoff_secs=8),
                seed=1)
    base.update(overrides)
    return LlmConfig(**base)


def answer_text(params: Mapping[str, Any]) -> str:
    """The fake provider's answer: the user message, reversed (deterministic, checkable)."""
    return params["messages"][-1]["content"][::-1]


class FakeCaller:
    """Answers from a script: ``script(params, n)`` returns text or raises a typed error.

    Args:
      script: Called with the request body and the 1-based number of this call; the default
        answers every request with :func:`answer_text`.
      prompt_tokens: Usage reported for each answer.
    """

    def __init__(self, script: Optional[Callable[[Mapping[str, Any], int], str]] = None,
                 prompt_tokens: int = 10, completion_tokens: int = 5):
        self._script = script or (lambda params, n: answer_text(params))
        self.calls: List[Dict[str, Any]] = []
        self.opened = self.closed = False
        self._prompt_tokens = prompt_tokens
        self._completion_tokens = completion_tokens

    async def open(self) -> None:
        self.opened = True

    async def call(self, params, timeout):
        self.calls.append(dict(params))
        text = self._script(params, len(self.calls))
        completion = Completion(content=text, model="fake-model", finish_reason="stop",
                                prompt_tokens=self._prompt_tokens,
                                completion_tokens=self._completion_tokens,
                                request_id=f"req-{len(self.calls)}")
        return completion, {"x-request-id": completion.request_id}

    def limits(self, headers):
        return limit_headers(headers)

    async def close(self) -> None:
        self.closed = True


class FakeLayer:
    """A layer (``answer(request, trace)``) answering from a script of texts or errors."""

    def __init__(self, *outcomes):
        self._outcomes = list(outcomes)
        self.requests = []

    async def answer(self, request, trace):
        self.requests.append(request)
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        trace.attempts += 1
        return Answer(Completion(content=outcome, model="fake-model", prompt_tokens=3,
                                 completion_tokens=4, request_id="r"))


# -- a caller factory usable in pipelines: counts what each process made ----------------------

CREATED: List[FakeCaller] = []
_LOCK = threading.Lock()


def _script(params, n):
    text = params["messages"][-1]["content"]
    if "CONTENT_FILTER" in text:
        raise errors.ContentFiltered("filtered", status=400)
    if "FAIL_ALWAYS" in text:
        raise errors.ServerError("boom", status=503)
    return answer_text(params)


def fake_factory(config, api_key) -> FakeCaller:
    """A picklable caller factory; every caller it makes is kept in :data:`CREATED`."""
    caller = FakeCaller(_script)
    with _LOCK:
        CREATED.append(caller)
    return caller
