"""The LLM call as small layers: caller, flow control, store, repair, engine, DoFn.

``CallModel`` (:mod:`transforms.llm.dofn`) is the public transform; the layers, each testable
alone with a fake caller and an injected clock, are described in their modules.
"""

from transforms.llm.config import DEFAULT_SYSTEM_PROMPT, LlmConfig, resolve_api_key
from transforms.llm.dofn import CallModel
from transforms.llm.stop import StopSignal

__all__ = ["CallModel", "DEFAULT_SYSTEM_PROMPT", "LlmConfig", "StopSignal", "resolve_api_key"]
