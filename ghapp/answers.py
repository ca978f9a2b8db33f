"""The GitHub answers kept for conditional requests: a bounded LRU whose bodies are stored compressed.

gidgethub keeps ``(etag, last_modified, data, more)`` per URL and sends ``If-None-Match`` with the etag; a
``304 Not Modified`` is then answered from the kept `data`. A steady reconcile pass hits every listing it
makes (runs, jobs of each in-progress run, runner pages, deliveries), so the cache must hold all of them at
once — with thousands of runs that is thousands of answers, which as parsed JSON cost tens of kilobytes
each. Kept as compressed JSON they cost a few hundred bytes to a few kilobytes; a hit decompresses one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import cachetools

COMPRESSION_LEVEL = 1
"""zlib level: fast; JSON listings compress well even so."""


class CompressedAnswers(MutableMapping[str, Any]):
    """A `cachetools.LRUCache` of at most `maxsize` answers whose bodies are kept as compressed JSON."""

    def __init__(self, *, maxsize: int) -> None:
        self._lru: cachetools.LRUCache[str, tuple[Any, ...]] = cachetools.LRUCache(maxsize=maxsize)

    def __getitem__(self, key: str) -> Any:
        etag, last_modified, blob, more = self._lru[key]
        return etag, last_modified, json.loads(zlib.decompress(blob)), more

    def __setitem__(self, key: str, value: Any) -> None:
        etag, last_modified, data, more = value
        blob = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), COMPRESSION_LEVEL)
        self._lru[key] = (etag, last_modified, blob, more)

    def __delitem__(self, key: str) -> None:
        del self._lru[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lru)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def stored_bytes(self) -> int:
        """Compressed bytes of the bodies kept (what the cache costs beyond its keys and tags)."""
        return sum(len(blob) for _, _, blob, _ in self._lru.values())
