"""Microbenchmarks: the cost of each per-ticket layer measured alone, in CPU microseconds.

Each measurement isolates one candidate fix of ``benchmarks/PROFILE.md`` without touching the
pipeline: what the SDK does to a request and to an answer, JSON libraries, the handoff of a
ticket between a DoFn's thread and an event loop, Beam's cost per element and per coder::

    python -m benchmarks.micro                  # everything (~1-2 min on 2 busy cores)
    python -m benchmarks.micro --only parse,handoff --n 20000

Figures are CPU time (``time.process_time``) per operation, so other processes on the machine
change them little; each is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence

from benchmarks.baseline_common import DEFAULT_SYSTEM_PROMPT, messages_of

_TICKET = {"id": "T-000001", "subject": "Can't connect Zapier",
           "body": "Hello Nimbus team,\n\nI'm trying to set up the Zapier integration but I'm "
                   "stuck at the permissions step. I'm an admin on both sides. " * 3,
           "customer": {"name": "Amelia Patel", "email": "amelia.patel@example.com",
                        "plan": "free"},
           "priority": "normal", "channel": "web", "created_at": "2026-02-19T01:01:50Z",
           "tags": ["integration"], "language": "en"}


def cpu_us(fn: Callable[[], object], n: int, repeat: int = 3) -> float:
    """CPU microseconds per call of ``fn`` (best of ``repeat`` runs of ``n`` calls)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best * 1e6 / n


def _orjson():
    """The ``orjson`` module, or None: it is measured when installed, not required."""
    try:
        import orjson  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return orjson


def completion_body() -> bytes:
    """One real answer of the simulator to the pipeline's request (``max_tokens`` 256)."""
    import simulator  # pylint: disable=import-outside-toplevel

    with simulator.start() as sim:
        request = urllib.request.Request(
            sim.base_url + "/chat/completions", method="POST",
            data=json.dumps({"model": "gpt-4o-mini", "max_tokens": 256, "messages": messages_of(
                _TICKET, DEFAULT_SYSTEM_PROMPT)}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer bench"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()


def bench_parse(n: int, repeat: int) -> dict[str, float]:
    """An answer: json.loads vs orjson vs the SDK's model (as ``raw.parse()`` builds it)."""
    from openai._models import construct_type  # pylint: disable=import-outside-toplevel
    from openai.types.chat import ChatCompletion  # pylint: disable=import-outside-toplevel

    body = completion_body()
    data = json.loads(body)
    orjson = _orjson()
    return {
        "answer_bytes": len(body),
        "json_loads_us": cpu_us(lambda: json.loads(body), n, repeat),
        "orjson_loads_us": cpu_us(lambda: orjson.loads(body), n, repeat) if orjson else None,
        "sdk_construct_us": cpu_us(lambda: construct_type(value=data, type_=ChatCompletion),
                                   n, repeat),
        "pydantic_validate_us": cpu_us(lambda: ChatCompletion.model_validate(data), n, repeat),
    }


def bench_request(n: int, repeat: int) -> dict[str, float]:
    """A request body: the SDK's param transform + its JSON vs a plain json.dumps / orjson."""
    from openai._utils import async_maybe_transform  # pylint: disable=import-outside-toplevel
    from openai.types.chat import completion_create_params as params

    messages = messages_of(_TICKET, DEFAULT_SYSTEM_PROMPT)
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 256}
    loop = asyncio.new_event_loop()
    orjson = _orjson()

    def sdk_transform() -> object:
        # The dict the SDK transforms has every optional parameter; most are "omit".
        return loop.run_until_complete(
            async_maybe_transform(body, params.CompletionCreateParamsNonStreaming))

    try:
        return {"sdk_transform_us": cpu_us(sdk_transform, n, repeat),
                "empty_run_until_complete_us": cpu_us(
                    lambda: loop.run_until_complete(asyncio.sleep(0)), n, repeat),
                "json_dumps_us": cpu_us(lambda: json.dumps(body), n, repeat),
                "orjson_dumps_us": (cpu_us(lambda: orjson.dumps(body), n, repeat)
                                    if orjson else None)}
    finally:
        loop.close()


def bench_handoff(n: int, repeat: int, window: int = 32) -> dict[str, float]:
    """A ticket crossing from a DoFn's thread to the engine's loop and back, as ``_CallModelFn``.

    ``threadsafe_us``: ``run_coroutine_threadsafe`` of a trivial coroutine per ticket, at most
    ``window`` pending, drained with ``concurrent.futures.wait(FIRST_COMPLETED)`` then a scan of
    the pending list (what ``_drain`` does). ``in_loop_us``: the same coroutines as tasks of one
    loop (no thread crossing). The difference is the handoff's cost per ticket.
    """
    async def work() -> int:
        await asyncio.sleep(0)
        return 1

    def threadsafe() -> float:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        pending: list = []
        start = time.process_time()
        for _ in range(n):
            while len(pending) >= window:
                concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                pending = [f for f in pending if not f.done()]
            pending.append(asyncio.run_coroutine_threadsafe(work(), loop))
        concurrent.futures.wait(pending)
        spent = time.process_time() - start
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        return spent

    def in_loop() -> float:
        async def main() -> None:
            semaphore = asyncio.Semaphore(window)

            async def one() -> None:
                async with semaphore:
                    await work()
            await asyncio.gather(*(one() for _ in range(n)))
        start = time.process_time()
        asyncio.run(main())
        return time.process_time() - start

    return {"threadsafe_us": min(threadsafe() for _ in range(repeat)) * 1e6 / n,
            "in_loop_us": min(in_loop() for _ in range(repeat)) * 1e6 / n}


def bench_coders(n: int, repeat: int) -> dict[str, float]:
    """Beam's coder round trip (encode + decode) of what crosses our groupings."""
    from apache_beam.coders import coders  # pylint: disable=import-outside-toplevel

    from transforms.records import Result, Ticket  # pylint: disable=import-outside-toplevel

    line = json.dumps(_TICKET)
    ticket = Ticket(id="T-000001", subject=_TICKET["subject"], body=_TICKET["body"],
                    fields=_TICKET, source="/tmp/t.jsonl", line=1)
    result = Result(id="T-000001", response="x" * 1100, model="gpt-4o-mini",
                    finish_reason="stop", prompt_tokens=135, completion_tokens=256,
                    latency_ms=3.2, attempts=1, started_at=1.7e9, finished_at=1.7e9 + 0.01,
                    ticket=_TICKET, request_id="req_1")
    coder = coders.FastPrimitivesCoder()
    out = {}
    for name, value in (("raw_record_tuple", ("/tmp/t.jsonl", 1, line)),
                        ("ticket", ticket), ("keyed_ticket", ("shard-0001", ticket)),
                        ("result", result)):
        out[f"{name}_us"] = cpu_us(lambda v=value: coder.decode(coder.encode(v)), n, repeat)
    out["result_to_json_us"] = cpu_us(result.to_json, n, repeat)
    return out


def _beam_cpu(n: int, maps: int, group: bool, payload: str) -> float:
    """CPU seconds of one FnApiRunner pipeline: n elements through ``maps`` Maps (+ a group)."""
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    shards = 16
    per = max(1, n // shards)
    start = time.process_time()
    with beam.Pipeline(runner="FnApiRunner") as p:
        pcoll = (p | beam.Create(list(range(shards)))
                 | beam.FlatMap(lambda s: ((f"{s}-{i}", payload) for i in range(per))))
        for i in range(maps):
            pcoll = pcoll | f"Map{i}" >> beam.Map(lambda kv: kv)
        if group:
            pcoll = pcoll | beam.GroupByKey() | beam.Map(lambda kv: (kv[0], next(iter(kv[1]))))
        _ = pcoll | beam.combiners.Count.Globally()
    return time.process_time() - start


def bench_beam(n: int, repeat: int) -> dict[str, float]:
    """Beam's own cost per element on the FnApiRunner: per fused Map, per GroupByKey."""
    payload = json.dumps(_TICKET)
    best = {}
    for name, maps, group in (("base", 0, False), ("maps5", 5, False), ("group", 0, True)):
        best[name] = min(_beam_cpu(n, maps, group, payload) for _ in range(repeat))
    return {"pipeline_cpu_s": round(best["base"], 3),
            "per_map_per_element_us": (best["maps5"] - best["base"]) * 1e6 / (5 * n),
            "per_group_per_element_us": (best["group"] - best["base"]) * 1e6 / n}


BENCHES = {"parse": bench_parse, "request": bench_request, "handoff": bench_handoff,
           "coders": bench_coders, "beam": bench_beam}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints one JSON object, measurement → figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--n", type=int, default=20000, help="operations per measurement")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHES)
    out = {}
    for name in names:
        n = args.n * 5 if name == "beam" else args.n
        out[name] = {k: None if v is None else round(v, 3)
                     for k, v in BENCHES[name](n, args.repeat).items()}
        print(f"{name}: {json.dumps(out[name])}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
