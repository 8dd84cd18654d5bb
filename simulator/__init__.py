"""A local OpenAI-compatible chat completions provider for tests, benchmarks and rehearsals.

It speaks enough of OpenAI's API for the ``openai`` client (``POST /v1/chat/completions``,
``GET /v1/models``, and the Batch API: ``/v1/files``, ``/v1/batches``), enforces requests- and
tokens-per-minute limits the way OpenAI does, adds latency and faults on request, and counts what
it served (``GET /stats``). It also speaks Anthropic's Messages API (``POST /v1/messages``, for
the ``anthropic`` client at ``handle.root_url``), with Anthropic's limits and prompt cache.

    from simulator import start

    with start(rpm=600, latency_median_ms=200, p_503=0.05, seed=1) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="test")
        ...

From a shell: ``python -m simulator --port 8000 --rpm 600``. See simulator/README.md.
"""

from simulator.config import SimulatorConfig, add_arguments, config_from_argv
from simulator.server import Simulator, SimulatorHandle, serve, start
from simulator.tokens import count_tokens, prompt_tokens

__all__ = [
    "Simulator",
    "SimulatorConfig",
    "SimulatorHandle",
    "add_arguments",
    "config_from_argv",
    "count_tokens",
    "prompt_tokens",
    "serve",
    "start",
]
