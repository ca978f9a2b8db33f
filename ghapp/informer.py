"""List, then watch, one kind of object in one namespace, forever: the loop behind the runner Job and Pod
caches.

Like a client-go informer: a fresh list replaces what the cache knew, then a watch from the list's
resourceVersion brings each change; an expired or broken watch lists again (after a pause that grows while
the API server keeps failing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ghapp.clock import Clock
from ghapp.errors import KubernetesError
from ghapp.kube import WATCH_SECONDS, Expired, KubeClient, Resource
from ghapp.manifests import RUNNER_SELECTOR

log = logging.getLogger(__name__)


async def list_then_watch(
    kube: KubeClient,
    resource: Resource,
    *,
    namespace: str,
    relist: Callable[[list[dict[str, Any]]], None],
    apply: Callable[[str, dict[str, Any]], None],
    clock: Clock,
    what: str,
    version: str = "",
    selector: str = RUNNER_SELECTOR,
    fields: str = "",
    broken: Callable[[], None] = lambda: None,
    working: Callable[[], None] = lambda: None,
    watch_seconds: int = WATCH_SECONDS,
) -> None:
    """Keep a cache of `resource` in `namespace` current until cancelled.

    `relist` gets every object after each list; `apply` each change (ADDED, MODIFIED, DELETED; bookmarks
    only move the version). `version` (from a list the caller made) skips the first list. Any exception is
    survived (only cancellation ends the loop): a bug or a malformed object must not freeze the cache.
    `broken` is called after each failure, `working` after each event a stream delivers (a bookmark too).
    The API server ends each watch after `watch_seconds`; the next one starts from the last resourceVersion
    seen (of an event or a bookmark), so it neither lists again nor sees an event twice.
    """
    failures = 0
    while True:
        try:
            if not version:
                objects, version = await kube.list(
                    resource, selector=selector, fields=fields, namespace=namespace
                )
                relist(objects)
            async for event in kube.watch(
                resource,
                resource_version=version,
                namespace=namespace,
                selector=selector,
                fields=fields,
                timeout_seconds=watch_seconds,
            ):
                seen = (event.object.get("metadata") or {}).get("resourceVersion")
                if seen:
                    version = str(seen)
                if event.type != "BOOKMARK":
                    apply(event.type, event.object)
                working()
                failures = 0
        except Expired:
            version = ""
            continue
        except KubernetesError as exc:
            log.warning("watching %s failed; listing again: %s", what, exc, extra={"namespace": namespace})
        except Exception as exc:  # the watch must outlive anything: a bug, a malformed object
            log.error(
                "watching %s failed unexpectedly; listing again: %s",
                what,
                type(exc).__name__,
                exc_info=True,
                extra={"namespace": namespace},
            )
        else:
            continue  # the server ended the stream (its timeout): watch again from where it ended
        failures += 1
        version = ""
        broken()
        await clock.sleep(min(30.0, 0.5 * 2**failures))
