"""The spending cap of one worker process (``--max_cost_usd``, its share).

Before a request is sent its most expensive outcome (prompt estimate + ``max_tokens`` at the
model's price) is reserved; the reservation is released when the request returns and the real
cost is spent. A request that would take spent + reserved past the budget is refused with
:class:`~transforms.errors.BudgetExhausted`, so the spend never passes the budget however many
requests are in flight.

Example::

    budget = LocalBudget(limit_usd=5.0)
    budget.reserve(0.002)            # raises BudgetExhausted when it would not fit
    ...; budget.release(0.002); budget.spend(0.0013)
"""

from __future__ import annotations

from typing import Optional

from transforms import errors


class LocalBudget:
    """A budget kept in this process (None: unlimited, but spend is still counted).

    Args:
      limit_usd: This worker's share of the budget, or None.
    """

    def __init__(self, limit_usd: Optional[float]):
        self.limit_usd = limit_usd
        self.spent = 0.0
        self.reserved = 0.0

    def reserve(self, cost: float) -> None:
        """Reserves ``cost`` or refuses.

        Raises:
          errors.BudgetExhausted: spent + reserved + cost would pass the limit.
        """
        if self.limit_usd is None:
            return
        if self.spent + self.reserved + cost > self.limit_usd:
            raise errors.BudgetExhausted(
                f"--max_cost_usd budget of this worker (${self.limit_usd:.6f}) reached: "
                f"${self.spent:.6f} spent, ${self.reserved:.6f} in flight")
        self.reserved += cost

    def release(self, cost: float) -> None:
        """Gives back a reservation made by :meth:`reserve`."""
        if self.limit_usd is not None:
            self.reserved = max(0.0, self.reserved - cost)

    def spend(self, cost: float) -> None:
        """Counts money really spent (an answer's cost)."""
        self.spent += cost
