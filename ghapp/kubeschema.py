"""Pure: validate a manifest against the Kubernetes JSON schemas (strict: unknown fields are errors).

Used at load time, so a pool template the API server would refuse stops startup instead of every launch.
Problems are described by path and kind of mistake, never by repeating the offending value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import kubernetes_validate

KUBERNETES_VERSION: Final = "1.33.0"
"""The API version manifests are checked against (the oldest Kubernetes release ghapp supports)."""


def problems(manifest: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """The schema problem in `manifest` as ``(path, message)`` (empty when valid).

    kubernetes-validate reports the first problem it finds; that is enough to fix one thing at a time.
    """
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [(tuple(exc.absolute_path), _describe(exc))]
    return []


def _describe(exc: Any) -> str:
    kind = exc.validator
    if kind in ("additionalProperties", "required"):
        return str(exc.message)  # names the field, not its value
    if kind == "type":
        wanted = exc.validator_value
        return f"must be of type {' or '.join(wanted) if isinstance(wanted, list) else wanted}"
    if kind == "enum":
        return "must be one of " + ", ".join(str(v) for v in exc.validator_value)
    if kind in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "format", "pattern"):
        return f"fails {kind} {exc.validator_value}"
    return f"is not a valid value ({kind})"


def dotted(path: Sequence[str | int]) -> str:
    """``("spec", "containers", 0, "resources")`` → ``spec.containers[0].resources``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
