"""The job's first requests are a trial of its configuration: until one succeeds, send only a few.

A wrong base URL, model or key fails every request the same way. So until one request of this
worker process has succeeded, each that fails the way a wrong configuration fails
(:data:`WRONG_CONFIG_KINDS`: a 404, the chat route or the model not found, or a 401/403, the key
refused) counts against the configuration, and ``failures`` of them with no success convict it:
nothing more is sent (:data:`REFUSE`), and the caller fails the job instead of spending a request
per ticket. Meanwhile no more requests are in flight than could still be needed to convict
(``failures`` less those counted), so a wrong configuration costs exactly ``failures`` requests.
One success ends the trial for good: from then on a 404 is about its ticket, and nothing is held
back. Other outcomes (429, 5xx, timeouts, a 400 about one request) prove nothing either way; they
only free their place.

Pure like the breaker (:mod:`transforms.limits.breaker`): :meth:`EndpointTrial.admit` and the
``on_*`` methods decide; :meth:`EndpointTrial.wait` is the thin async part (it returns at the
next outcome, or at :meth:`EndpointTrial.wake`).

Example::

    trial = EndpointTrial()
    while (decision := trial.admit()) == WAIT:
        await trial.wait()
    if decision == REFUSE:
        raise job_error
    try:
        answer = await call()
    except errors.ProviderError as exc:
        if trial.on_failure(exc.reason):
            job_error = ...        # this failure convicted the configuration
        raise
    trial.on_success()
"""

from __future__ import annotations

import asyncio
from typing import List

SEND = "send"
WAIT = "wait"
REFUSE = "refuse"

ON_TRIAL = "on_trial"
PROVEN = "proven"
CONVICTED = "convicted"

#: Failure kinds (``errors.ProviderError.reason``) that every request gets when the base URL, the
#: model or the key is wrong.
WRONG_CONFIG_KINDS = frozenset({"not_found", "auth_error"})

#: Failures that convict: a few, so that a wrong configuration costs that many requests per
#: worker process, while one ticket's own 404 among the first does not fail the job.
TRIAL_FAILURES = 3


class EndpointTrial:
    """Holds requests back until one has succeeded; convicts a configuration that fails them all.

    Args:
      failures: Failures of a :data:`WRONG_CONFIG_KINDS` kind, with no success, that convict.

    Attributes:
      state: :data:`ON_TRIAL`, :data:`PROVEN` or :data:`CONVICTED`.
      failed: The failures counted against the configuration so far.
    """

    def __init__(self, failures: int = TRIAL_FAILURES):
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        self.failures = failures
        self.state = ON_TRIAL
        self.failed = 0
        self._in_flight = 0
        self._waiters: List[asyncio.Future] = []

    def admit(self) -> str:
        """Whether a request may go now: :data:`SEND` (then it counts as in flight until its
        ``on_success``/``on_failure``), :data:`WAIT` (for :meth:`wait`), or :data:`REFUSE`."""
        if self.state == CONVICTED:
            return REFUSE
        if self.state == ON_TRIAL and self._in_flight >= self.failures - self.failed:
            return WAIT
        self._in_flight += 1
        return SEND

    def full(self) -> bool:
        """Whether :meth:`admit` would say WAIT now (a router's look: nothing is taken)."""
        return self.state == ON_TRIAL and self._in_flight >= self.failures - self.failed

    def on_success(self) -> None:
        """An admitted request succeeded: the configuration is proven."""
        self._in_flight -= 1
        if self.state == ON_TRIAL:
            self.state = PROVEN
        self.wake()

    def on_failure(self, kind: str) -> bool:
        """An admitted request failed (or was never sent) with ``kind``.

        Returns:
          True when this failure convicts the configuration (once).
        """
        self._in_flight -= 1
        convicted = False
        if self.state == ON_TRIAL and kind in WRONG_CONFIG_KINDS:
            self.failed += 1
            if self.failed >= self.failures:
                self.state = CONVICTED
                convicted = True
        self.wake()
        return convicted

    async def wait(self) -> None:
        """Returns at the next outcome (or :meth:`wake`); then ask :meth:`admit` again."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def wake(self) -> None:
        """Wakes every waiter (an outcome, or a stop they must notice)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
