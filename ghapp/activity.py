"""Which repositories the reconciler scans for queued jobs: those ghapp planned runners for lately (pure)."""

from __future__ import annotations

Key = tuple[int, str]
"""(installation id, ``owner/name``)."""


class Activity:
    """Repositories with a job ghapp planned a runner for lately; the reconciler scans these.

    Only planned jobs count: a repository whose jobs go to GitHub's hosted runners, or whose account may not
    get runners, costs no scans. A repository GitHub says is gone (404) is dropped until a job is planned
    there again.
    """

    def __init__(self) -> None:
        self._seen: dict[Key, float] = {}
        self._gone: dict[Key, float] = {}

    def touch(self, *, installation_id: int, repository: str, now: float) -> None:
        """ghapp planned a runner for a job of `repository`."""
        key = (installation_id, repository)
        self._seen[key] = now
        self._gone.pop(key, None)

    def recent(self, *, now: float, ttl: float) -> set[Key]:
        """Repositories touched within `ttl` seconds (older ones are forgotten)."""
        for table in (self._seen, self._gone):
            for key in [k for k, at in table.items() if now - at > ttl]:
                del table[key]
        return set(self._seen)

    def drop(self, *, installation_id: int, repository: str, now: float) -> None:
        """GitHub says `repository` does not exist (for this installation): stop scanning it."""
        key = (installation_id, repository)
        self._seen.pop(key, None)
        self._gone[key] = now

    def gone(self, *, installation_id: int, repository: str) -> bool:
        """True if `repository` was dropped and no job was planned there since."""
        return (installation_id, repository) in self._gone

    def forget_installation(self, installation_id: int) -> None:
        """The installation was deleted: none of its repositories is scanned any more."""
        for table in (self._seen, self._gone):
            for key in [k for k in table if k[0] == installation_id]:
                del table[key]
