"""Capacity per pool (and overall), and a queue that is fair across installations.

The count of running runners comes from the cluster (the `Inventory`), plus the launches this process has
under way that the cluster does not show yet. Nothing here is needed for correctness after a restart:
waiting jobs are still queued in GitHub and the reconciler finds them again.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

from ghapp.inventory import Inventory
from ghapp.planner import RunnerPlan

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class FairQueue(Generic[K, T]):
    """FIFO per key, weighted round-robin across keys (pure; no I/O).

    A key of weight w is served up to w items in a row before the next key's turn.
    """

    def __init__(self, *, weight: Callable[[K], int] = lambda key: 1) -> None:
        self._queues: OrderedDict[K, deque[T]] = OrderedDict()
        self._weight = weight
        self._served = 0  # items served in a row from the key at the front

    def push(self, key: K, item: T) -> None:
        self._queues.setdefault(key, deque()).append(item)

    def pop(self) -> T | None:
        """The next item in fair order, or None when empty."""
        if not self._queues:
            return None
        key, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._served += 1
        if not queue:
            del self._queues[key]
            self._served = 0
        elif self._served >= max(1, self._weight(key)):
            self._queues.move_to_end(key)
            self._served = 0
        return item

    def remove(self, matches: Callable[[T], bool]) -> int:
        """Drop every item for which `matches` is true; return how many."""
        removed = 0
        for key in list(self._queues):
            queue = self._queues[key]
            kept = deque(item for item in queue if not matches(item))
            removed += len(queue) - len(kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        return removed

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())


class Limiter:
    """Decides whether a runner may start now; keeps the ones that may not, in fair order."""

    def __init__(
        self,
        *,
        inventory: Inventory,
        pool_limits: Mapping[str, int],
        global_limit: int | None,
        weights: Mapping[int, int],
    ) -> None:
        self._inventory = inventory
        self._pool_limits = dict(pool_limits)
        self._global_limit = global_limit
        self._reserved: dict[str, str] = {}  # runner name → pool: launches that have not made their Job yet
        self._reserved_per_pool: Counter[str] = Counter()
        self._queues: dict[str, FairQueue[int, RunnerPlan]] = {
            pool: FairQueue(weight=lambda installation: weights.get(installation, 1)) for pool in pool_limits
        }

    def _in_use(self, pool: str | None) -> int:
        """Active runner Jobs in the cluster, plus launches that have not created their Job yet."""
        reserved = len(self._reserved) if pool is None else self._reserved_per_pool[pool]
        return self._inventory.active_count(pool) + reserved

    def has_room(self, pool: str) -> bool:
        if self._in_use(pool) >= self._pool_limits[pool]:
            return False
        return self._global_limit is None or self._in_use(None) < self._global_limit

    def reserve(self, plan: RunnerPlan) -> None:
        """Hold a slot for a launch until its Job is in the inventory (or the launch ends)."""
        if plan.name not in self._reserved:
            self._reserved[plan.name] = plan.pool.name
            self._reserved_per_pool[plan.pool.name] += 1

    def release(self, plan: RunnerPlan) -> None:
        """Give the slot back: the Job now counts itself (or was never made). Idempotent."""
        if self._reserved.pop(plan.name, None) is not None:
            self._reserved_per_pool[plan.pool.name] -= 1

    def enqueue(self, plan: RunnerPlan) -> None:
        self._queues[plan.pool.name].push(plan.installation_id, plan)

    def discard(self, workflow_job_id: int) -> int:
        """Forget a waiting job (it was cancelled or got a runner another way)."""
        return sum(
            q.remove(lambda plan: plan.workflow_job_id == workflow_job_id) for q in self._queues.values()
        )

    def ready(self) -> list[RunnerPlan]:
        """Take every waiting plan that may start now (reserving its slot), pools in turn."""
        started: list[RunnerPlan] = []
        progress = True
        while progress:
            progress = False
            for pool, queue in self._queues.items():
                if queue and self.has_room(pool):
                    plan = queue.pop()
                    if plan is not None:
                        self.reserve(plan)
                        started.append(plan)
                        progress = True
        return started

    def waiting(self, pool: str) -> int:
        return len(self._queues[pool])
