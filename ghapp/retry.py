"""Capped exponential backoff with (equal) jitter, shared by the GitHub and Kubernetes clients."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How often and how long to retry a transient failure."""

    attempts: int = 5
    """Tries in all, the first included."""
    base: float = 0.2
    """Delay scale of the first retry, in seconds."""
    cap: float = 30.0
    """Longest delay between two tries."""
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try `attempt` (1-based).

        Uniform between half and all of ``min(cap, base * 2 ** (attempt - 1))`` (equal jitter).
        """
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)
