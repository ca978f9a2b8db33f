"""Validate manifests against the Kubernetes JSON schemas (strict: unknown fields are errors)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from ghapp.kubeschema import KUBERNETES_VERSION


def validate(manifest: dict[str, Any]) -> None:
    """Raise kubernetes_validate.ValidationError (or its siblings) if the API server would reject it."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
