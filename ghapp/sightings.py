"""How long this process has seen things whose API tells no age: a grace period for GitHub's runners.

GitHub's runner objects carry no creation time, so "registered a moment ago by another replica" can only be
told by watching: a runner is old enough to judge once this process has seen it, unchanged, for a while.
"""

from __future__ import annotations

from collections.abc import Hashable

from ghapp.clock import Clock

FORGET_AFTER = 3600.0
"""A key not seen again for this long is forgotten (the map stays as small as what is being watched)."""


class Sightings:
    """First and last time each key was seen; keys unseen for `forget_after` seconds are dropped."""

    def __init__(self, *, clock: Clock, forget_after: float = FORGET_AFTER) -> None:
        self._clock = clock
        self._forget_after = forget_after
        self._seen: dict[Hashable, tuple[float, float]] = {}  # key → (first, last)

    def age(self, key: Hashable) -> float:
        """Record a sighting of `key` now; seconds since its first sighting (0 the first time)."""
        now = self._clock.now()
        for stale in [k for k, (_, last) in self._seen.items() if now - last > self._forget_after]:
            del self._seen[stale]
        first, _ = self._seen.get(key, (now, now))
        self._seen[key] = (first, now)
        return now - first

    def forget(self, key: Hashable) -> None:
        """`key` is gone (deleted); a new thing under it starts young."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)
