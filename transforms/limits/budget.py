"""The spending cap (``--max_cost_usd``) of this worker process, or of the whole job.

Before a request is sent its most expensive outcome (prompt estimate + ``max_tokens`` at the
model's price) is reserved; when it returns, the reservation is settled with the real cost. A
request that would take spent + reserved past the budget is refused, so the spend never passes
the budget however many requests are in flight.

:class:`LocalBudget` holds this worker's share (the job's budget × ``--worker_share``);
:class:`transforms.limits.shared_budget.SharedBudget` has the same interface and keeps ONE budget
for every worker of the job in the shared quota's Redis (``--shared_quota``).

Example::

    budget = LocalBudget(limit_usd=5.0)
    if not await budget.reserve(0.002):
        raise BudgetExhausted(...)
    ...; await budget.settle(0.002, actual_usd=0.0013)
"""

from __future__ import annotations

from typing import Optional


class LocalBudget:
    """A budget kept in this process (None: unlimited, but spend is still counted).

    Args:
      limit_usd: This worker's share of the budget, or None.
    """

    def __init__(self, limit_usd: Optional[float]):
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0

    async def reserve(self, upper_bound_usd: float) -> bool:
        """Reserves ``upper_bound_usd``; False (nothing reserved) when it would not fit."""
        if self.limit_usd is not None:
            if self.spent_usd + self.reserved_usd + upper_bound_usd > self.limit_usd:
                return False
            self.reserved_usd += upper_bound_usd
        return True

    async def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Gives back a reservation made by :meth:`reserve` and counts what was really spent."""
        if self.limit_usd is not None:
            self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        self.spent_usd += actual_usd

    def describe(self) -> str:
        return (f"--max_cost_usd budget of this worker (${self.limit_usd:.6f}) reached: "
                f"${self.spent_usd:.6f} spent, ${self.reserved_usd:.6f} in flight")
