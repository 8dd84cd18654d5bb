"""CPU per request of each provider's caller, against a simulator in another process.

The simulator runs as a subprocess, so ``time.process_time`` here is the client's alone: the
caller's body encoding, the SDK's request layer, the transport and the answer's parsing::

    python -m benchmarks.provider_callers --n 2000 --concurrency 16

Also measured, for comparison: the ``google-genai`` SDK's public ``models.generate_content``
(typed parameters and a pydantic answer) and a bare ``aiohttp`` post of the same body.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from benchmarks.baseline_common import DEFAULT_SYSTEM_PROMPT
from transforms.llm.config import LlmConfig

_TICKET = ("Subject: Can't connect Zapier\n\nI'm trying to set up the Zapier integration but "
           "I'm stuck at the permissions step. I'm an admin on both sides. " * 3)


def _params(model: str) -> dict:
    return {"model": model, "max_tokens": 256, "temperature": 0.2,
            "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                         {"role": "user", "content": _TICKET}]}


def _start_simulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = next(word for word in line.split() if word.startswith("http"))
    return proc, url.rstrip("/").removesuffix("/v1")


async def _measure(call: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    """CPU microseconds per call, ``n`` calls with ``concurrency`` in flight (after a warm-up)."""
    for _ in range(20):
        await call()
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await call()

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - start) / n * 1e6


async def _run(root: str, n: int, concurrency: int) -> dict[str, float]:
    import aiohttp
    import orjson
    from google import genai
    from google.genai import types

    from transforms.llm.providers.anthropic import AnthropicCaller
    from transforms.llm.providers.gemini import GeminiCaller, generate_body, parse_response
    from transforms.llm.providers.openai import OpenAICaller

    out = {}
    openai_caller = OpenAICaller(LlmConfig(base_url=root + "/v1", model="gpt-4o-mini",
                                           max_concurrency=concurrency), "k")
    await openai_caller.open()
    params = _params("gpt-4o-mini")
    out["openai_caller"] = await _measure(lambda: openai_caller.call(params, 30.0), n,
                                          concurrency)
    await openai_caller.close()

    claude = AnthropicCaller(LlmConfig(base_url=root, model="claude-haiku-4-5",
                                       provider="anthropic", max_concurrency=concurrency), "k")
    await claude.open()
    cparams = _params("claude-haiku-4-5")
    out["anthropic_caller"] = await _measure(lambda: claude.call(cparams, 30.0), n, concurrency)
    await claude.close()

    gemini = GeminiCaller(LlmConfig(base_url=root, model="gemini-2.5-flash", provider="gemini",
                                    max_concurrency=concurrency), "k")
    await gemini.open()
    gparams = _params("gemini-2.5-flash")
    out["gemini_caller"] = await _measure(lambda: gemini.call(gparams, 30.0), n, concurrency)
    await gemini.close()

    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=root, retry_options=types.HttpRetryOptions(attempts=1))).aio
    config = types.GenerateContentConfig(system_instruction=DEFAULT_SYSTEM_PROMPT,
                                         max_output_tokens=256, temperature=0.2)

    async def public() -> object:
        return await client.models.generate_content(model="gemini-2.5-flash",
                                                     contents=_TICKET, config=config)
    out["genai_generate_content"] = await _measure(public, n, concurrency)
    await client.aclose()

    url = root + "/v1beta/models/gemini-2.5-flash:generateContent"
    async with aiohttp.ClientSession() as session:
        async def bare() -> object:
            body = orjson.dumps(generate_body(gparams))
            async with session.post(url, data=body, headers={
                    "x-goog-api-key": "k", "content-type": "application/json"}) as response:
                return parse_response(await response.read())
        out["aiohttp_post"] = await _measure(bare, n, concurrency)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    proc, root = _start_simulator()
    try:
        results = asyncio.run(_run(root, args.n, args.concurrency))
    finally:
        proc.terminate()
        proc.wait(10)
    for name, us in results.items():
        print(f"{name:24s} {us:8.0f} us CPU per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
