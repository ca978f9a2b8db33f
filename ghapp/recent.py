"""A map that forgets: bounded memory for what ghapp notes about deliveries and deleted objects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ghapp.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """Entries last `ttl` seconds after they were last set, and at most `max_entries` are kept (the ones set
    longest ago go first). Every write prunes, so the map never holds more than it may.
    """

    def __init__(self, *, clock: Clock, ttl: float, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # oldest write first

    def get(self, key: K, default: V) -> V:
        """The value of `key`, or `default` if it was never set, was removed or has expired."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry[0]):
            return default
        return entry[1]

    def set(self, key: K, value: V) -> None:
        """Set `key` (it lasts `ttl` from now), then forget what has expired or is over the limit."""
        self._entries.pop(key, None)
        self._entries[key] = (self._clock.now(), value)
        self.prune()

    def pop(self, key: K) -> V | None:
        """Remove `key`; its value if it was there and had not expired."""
        entry = self._entries.pop(key, None)
        return None if entry is None or self._expired(entry[0]) else entry[1]

    def remove_if(self, matches: Callable[[K, V], bool]) -> int:
        """Remove every entry for which `matches(key, value)` is true; return how many."""
        keys = [key for key, (_, value) in self._entries.items() if matches(key, value)]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def prune(self) -> None:
        """Forget expired entries and the oldest beyond `max_entries`."""
        while self._entries:
            key, (written, _) = next(iter(self._entries.items()))
            if not self._expired(written) and len(self._entries) <= self._max_entries:
                break
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def _expired(self, written: float) -> bool:
        return self._clock.now() - written > self._ttl

    def __contains__(self, key: object) -> bool:
        entry = self._entries.get(key)  # type: ignore[arg-type]
        return entry is not None and not self._expired(entry[0])

    def __len__(self) -> int:
        """Entries held, expired ones not yet pruned included (the memory in use)."""
        return len(self._entries)
