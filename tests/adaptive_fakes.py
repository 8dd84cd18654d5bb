"""A fake server for the adaptive concurrency controller's unit tests: a knee, a queue, 503s.

Time is simulated (events in a heap, the controller's clock is the simulation's), so a test of
minutes of traffic runs in milliseconds.
"""

import heapq
import random

from transforms.limits.concurrency import DROP, OK, AdaptiveConcurrency


class KneeServer:
    """Latency per token grows slowly with the batch up to ``knee``, then requests queue.

    Args:
      knee: Sequences served at once.
      queue: Waiting places beyond the knee; a request over both is dropped (503).
      secs_per_token: The no-load time per token.
      growth: Extra time per token per sequence in the batch (relative).
      tokens: (low, high) of the answers' lengths.
    """

    def __init__(self, knee=48, queue=64, secs_per_token=0.01, growth=0.003, tokens=(60, 200),
                 seed=1):
        self.knee, self.queue = knee, queue
        self.secs_per_token, self.growth, self.tokens = secs_per_token, growth, tokens
        self.rng = random.Random(seed)

    def latency(self, in_flight, tokens):
        batch = min(in_flight, self.knee)
        per_token = self.secs_per_token * (1 + self.growth * batch)
        return tokens * per_token * max(1.0, in_flight / self.knee)

    def peak_answers_per_sec(self):
        mean_tokens = sum(self.tokens) / 2
        return self.knee / self.latency(self.knee, mean_tokens)


class Driver:
    """Keeps the controller's limit of requests in flight against a server, in simulated time."""

    def __init__(self, server, controller_factory, *, overload_at=None):
        self.now = 0.0
        self.server = server
        self.controller: AdaptiveConcurrency = controller_factory(lambda: self.now)
        self.events = []
        self.in_flight = 0
        self.answers = []  # (time, latency)
        self.drops = 0
        self.limits = []  # (time, limit)

    def _fill(self):
        while self.in_flight < self.controller.limit:
            self.in_flight += 1
            sent = self.controller.on_sent()
            if self.in_flight > self.server.knee + self.server.queue:
                heapq.heappush(self.events, (self.now + 0.005, id(sent), sent, 0.005, 0, DROP))
                continue
            tokens = self.server.rng.randint(*self.server.tokens)
            latency = self.server.latency(self.in_flight, tokens)
            heapq.heappush(self.events, (self.now + latency, self.server.rng.random(), sent,
                                         latency, tokens, OK))

    def run(self, secs):
        end = self.now + secs
        self._fill()
        while self.events and self.events[0][0] <= end:
            at, _, sent, latency, tokens, outcome = heapq.heappop(self.events)
            self.now = at
            self.in_flight -= 1
            if outcome == OK:
                self.answers.append((at, latency))
            else:
                self.drops += 1
            self.controller.on_done(sent, latency, tokens, outcome)
            self.limits.append((at, self.controller.limit))
            self._fill()
        self.now = end

    def answers_per_sec(self, start, end):
        return sum(1 for t, _ in self.answers if start <= t < end) / (end - start)
