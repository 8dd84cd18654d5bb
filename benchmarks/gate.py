"""A pass-through proxy in front of the simulator that tells the jobs apart, for benchmarks.

Each job gets its own base URL, ``http://127.0.0.1:PORT/JOB/v1``; the gate forwards every
request unchanged to the simulator (headers of the answer included, so ``retry-after`` and the
``x-ratelimit-*`` headers reach the job) and records, per job, when each answer came back and its
status. The simulator's own stats cannot say which job a request came from::

    with JobGate(sim.base_url) as gate:
        url = gate.base_url("a")            # give job "a" this --base_url
        ...
        gate.counts("a", start, end)        # {"requests": ..., "ok": ..., "rate_limited": ...}
        gate.first_answer("a")              # POSIX time of its first 200, or None
        gate.asked("a", start, end)         # when its requests reached the gate

The gate runs its own event loop in a daemon thread of the benchmark's process; it adds about a
millisecond per request, the same for every job.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

#: Headers aiohttp sets itself on the way back.
_HOP = ("content-length", "transfer-encoding", "connection", "content-encoding", "date", "server")


class JobGate:
    """Forwards ``/JOB/v1/...`` to ``upstream`` and records every answer's time and status.

    Args:
      upstream: The simulator's base URL (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, upstream: str):
        self._upstream = upstream.rsplit("/v1", 1)[0]
        self._answers: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
        self._asked: dict[str, list[float]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="job-gate",
                                        daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    def base_url(self, job: str) -> str:
        """The ``--base_url`` of job ``job`` (letters, digits, ``-`` and ``_``)."""
        return f"http://127.0.0.1:{self.port}/{job}/v1"

    async def _start(self) -> int:
        self._session = ClientSession(connector=TCPConnector(limit=0),
                                      timeout=ClientTimeout(total=None))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{job}/v1/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _forward(self, request: web.Request) -> web.Response:
        job = request.match_info["job"]
        if request.method == "POST":
            with self._lock:
                self._asked[job].append(time.time())
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "authorization")}
        url = f"{self._upstream}/v1/{request.match_info['tail']}"
        if request.query_string:
            url += "?" + request.query_string
        async with self._session.request(request.method, url, data=body,
                                         headers=headers) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            if request.method == "POST":  # chat completions; not the preflight's GET /models
                with self._lock:
                    self._answers[job].append((time.time(), answer.status))
            return web.Response(status=answer.status, body=payload, headers=kept)

    def counts(self, job: str, start: float, end: float) -> dict[str, int]:
        """Answers job ``job`` got in [start, end): all, successes (200) and 429s."""
        with self._lock:
            inside = [status for t, status in self._answers[job] if start <= t < end]
        return {"requests": len(inside), "ok": inside.count(200),
                "rate_limited": inside.count(429)}

    def asked(self, job: str, start: float, end: float) -> list[float]:
        """When job ``job``'s requests (chat completions) reached the gate, in [start, end)."""
        with self._lock:
            return [t for t in self._asked[job] if start <= t < end]

    def first_answer(self, job: str) -> float | None:
        """When job ``job`` got its first success, or None."""
        with self._lock:
            return next((t for t, status in self._answers[job] if status == 200), None)

    def totals(self, job: str) -> dict[str, int]:
        """Every answer job ``job`` got so far."""
        return self.counts(job, 0.0, float("inf"))

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def close(self) -> None:
        """Stops the server and its thread."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> JobGate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
