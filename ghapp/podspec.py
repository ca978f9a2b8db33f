"""Pure: what the API server would refuse in a pod spec that the OpenAPI schema does not say.

The schema checks shapes (a field's type, unknown fields); the API server also refuses a container without
an image, two containers of one name, a mount of a volume the pod does not have, and a resource quantity
that is not a number (``cpu: lots``) or a request above its limit. Checked at startup, so such a pool stops
ghapp with the pool and field named instead of every launch failing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final

from ghapp import kubeschema

Path = tuple[str | int, ...]

_QUANTITY: Final = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity (``500m``, ``2Gi``, ``1e3``, ``4``) as a number, else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def problems(pod_spec: dict[str, Any], *, at: Path = ()) -> list[tuple[Path, str]]:
    """Each problem of `pod_spec` as ``(path, message)``; paths start with `at`. Values are never repeated."""
    found: list[tuple[Path, str]] = []
    volumes = {v.get("name") for v in pod_spec.get("volumes") or [] if isinstance(v, dict)}
    seen: dict[str, Path] = {}
    for key in ("initContainers", "containers"):
        for index, container in enumerate(pod_spec.get(key) or []):
            if not isinstance(container, dict):
                continue
            where = (*at, key, index)
            found += _container_problems(container, where, volumes)
            name = container.get("name")
            if isinstance(name, str) and name in seen:
                found.append(
                    ((*where, "name"), f"duplicate container name (also {kubeschema.dotted(seen[name])})")
                )
            elif isinstance(name, str):
                seen[name] = where
    return found


def _container_problems(container: dict[str, Any], where: Path, volumes: set[Any]) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    name = container.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        found.append(((*where, "name"), "must be a DNS label (lowercase letters, digits, '-'; ≤ 63)"))
    image = container.get("image")
    if not isinstance(image, str) or not image.strip():
        found.append(((*where, "image"), "is required: every container needs an image"))
    elif image != image.strip():
        found.append(((*where, "image"), "must not have leading or trailing whitespace"))
    for index, mount in enumerate(container.get("volumeMounts") or []):
        if isinstance(mount, dict) and mount.get("name") not in volumes:
            found.append(((*where, "volumeMounts", index, "name"), "names no volume of the pod"))
    resources = container.get("resources") or {}
    parsed: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        for resource, value in (resources.get(kind) or {}).items():
            amount = quantity(value)
            path = (*where, "resources", kind, resource)
            if amount is None:
                found.append((path, "is not a quantity (e.g. 500m, 2, 4Gi, 1e3)"))
            elif amount < 0:
                found.append((path, "must not be negative"))
            else:
                parsed.setdefault(kind, {})[resource] = amount
    for resource, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(resource)
        if limit is not None and request > limit:
            found.append(((*where, "resources", "requests", resource), "must be at most its limit"))
    return found
