"""A single-flight cache of values that expire (installation tokens, registration tokens)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ghapp.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Expiring(Generic[V]):
    """A value and the epoch second it stops being valid."""

    value: V
    expires_at: float


class ExpiringCache(Generic[K, V]):
    """Fetches a value per key on demand, reuses it while at least `margin` seconds of it remain.

    Concurrent callers for the same key share one fetch; a failed fetch is not cached. Each fetch forgets
    the values that have expired; with `max_entries`, the longest-held value is dropped when a new one would
    exceed it.
    """

    def __init__(
        self,
        *,
        fetch: Callable[[K], Awaitable[Expiring[V]]],
        clock: Clock,
        margin: float,
        max_entries: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._max_entries = max_entries
        self._values: dict[K, Expiring[V]] = {}
        self._inflight: dict[K, asyncio.Future[Expiring[V]]] = {}

    async def get(self, key: K) -> V:
        """The cached value for `key`, fetching a fresh one if it is missing or about to expire."""
        cached = self._values.get(key)
        if cached is not None and self._fresh(cached):
            return cached.value
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settle(key, done))
        # shield: one caller being cancelled must not cancel the fetch the others wait for
        return (await asyncio.shield(future)).value

    def _fresh(self, cached: Expiring[V]) -> bool:
        remaining = cached.expires_at - self._clock.now()
        return remaining > 0 and remaining >= self._margin

    def _settle(self, key: K, done: asyncio.Future[Expiring[V]]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled() and done.exception() is None:
            now = self._clock.now()
            for stale in [k for k, cached in self._values.items() if cached.expires_at <= now]:
                del self._values[stale]  # expired values of keys nobody asks for any more
            self._values.pop(key, None)
            self._values[key] = done.result()
            if self._max_entries is not None and len(self._values) > self._max_entries:
                del self._values[next(iter(self._values))]  # the longest-held value

    def invalidate(self, key: K, value: V | None = None) -> None:
        """Forget `key`'s value (only if it is still `value`, when given), e.g. after a 401."""
        cached = self._values.get(key)
        if cached is not None and (value is None or cached.value == value):
            del self._values[key]

    def __len__(self) -> int:
        return len(self._values)
