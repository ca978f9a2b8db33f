"""What the reconciler's scan may spend of each installation's GitHub rate limit (pure; no I/O).

GitHub gives an installation a number of requests per window (an hour). The scan for queued jobs may spend at
most `share` of a window's limit over the whole window — so a pass every minute cannot eat the hour — and at
most `share` of what is left when a pass starts, so webhooks' launches always keep the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

DEFAULT_LIMIT: Final = 5000
"""An installation's requests per window until GitHub's headers say otherwise (GitHub's minimum)."""
DEFAULT_WINDOW: Final = 3600.0
"""Seconds of a rate-limit window until GitHub's headers say otherwise."""


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A primary rate-limit window as GitHub's ``x-ratelimit-*`` headers last described it."""

    limit: int
    remaining: int
    reset_at: float


class Budget:
    """Requests one scan may still make for one installation; each page GitHub answers in full takes one.

    A request takes one before it is sent (`reserve`), so listings made at once never overdraw the budget,
    and gives it back when GitHub answered ``304 Not Modified`` (a conditional request whose listing did not
    change costs nothing against GitHub's primary rate limit; counted apart as `unchanged`) or when no answer
    came (`release`).
    """

    def __init__(self, requests: int) -> None:
        self.left = max(0, requests)
        self.spent = 0
        self.unchanged = 0

    def reserve(self) -> bool:
        """Take one request for a request about to be made; False when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def settle(self, *, unchanged: bool = False) -> None:
        """A reserved request was answered: spent, or given back when GitHub answered 304."""
        if unchanged:
            self.left += 1
            self.unchanged += 1
        else:
            self.spent += 1

    def release(self) -> None:
        """A reserved request got no answer: give it back."""
        self.left += 1


class ScanBudgets:
    """The scan's spending per installation and rate-limit window, and the budget of each pass."""

    def __init__(self, *, share: float) -> None:
        self._share = share
        self._spent: dict[int, tuple[float, int]] = {}  # installation → (its window's reset, spent in it)

    def for_pass(self, installation_id: int, window: RateWindow | None, *, now: float) -> Budget:
        """What a pass may spend now: the window's allowance not yet spent, and `share` of what remains."""
        window = _current(window, now)
        return Budget(
            min(self.allowance(installation_id, window, now=now), math.floor(self._share * window.remaining))
        )

    def allowance(self, installation_id: int, window: RateWindow | None, *, now: float) -> int:
        """What the scan may still spend of `window`'s allowance (`share` of its limit) until it resets."""
        window = _current(window, now)
        return max(0, math.floor(self._share * window.limit) - self.spent(installation_id, window))

    def spent(self, installation_id: int, window: RateWindow) -> int:
        """Requests the scan spent for `installation_id` in `window` (0 in a window it has not spent in)."""
        reset_at, spent = self._spent.get(installation_id, (math.nan, 0))
        return spent if reset_at == window.reset_at else 0

    def record(self, installation_id: int, window: RateWindow | None, budget: Budget) -> None:
        """Add what a pass spent to the window GitHub reported after it (the one it was spent in)."""
        if window is None or not budget.spent:
            return
        self._spent[installation_id] = (window.reset_at, self.spent(installation_id, window) + budget.spent)

    def forget(self, installation_id: int) -> None:
        self._spent.pop(installation_id, None)


def _current(window: RateWindow | None, now: float) -> RateWindow:
    """`window`, or a fresh default one if GitHub has not described one yet or it has reset."""
    if window is None or window.reset_at <= now:
        return RateWindow(limit=DEFAULT_LIMIT, remaining=DEFAULT_LIMIT, reset_at=now + DEFAULT_WINDOW)
    return window
