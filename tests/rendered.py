"""deploy/ as real Kustomize renders it: ``kubectl kustomize DIR`` (kubectl's built-in Kustomize), parsed."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BASE = DEPLOY / "base"
KUSTOMIZATIONS: tuple[Path, ...] = tuple(sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml")))
"""Every kustomization under deploy/: the base, the overlays and the examples."""

CUSTOM_RESOURCES = frozenset({"ServiceMonitor", "PrometheusRule", "HTTPRoute"})
"""Kinds of CRDs (Prometheus Operator, Gateway API) that the Kubernetes schemas do not know."""


@functools.cache
def _render(directory: Path) -> str:
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} exited {done.returncode}: {done.stderr}")
    return done.stdout


def render(directory: Path) -> list[Manifest]:
    """What ``kubectl kustomize directory`` prints (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_render(directory)) if doc]


def find(manifests: list[Manifest], kind: str, name: str, namespace: str | None = None) -> Manifest:
    """The one manifest of `kind` named `name` (in `namespace`, if given)."""
    (found,) = [
        m
        for m in manifests
        if m["kind"] == kind
        and m["metadata"]["name"] == name
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]
    return found


def named(manifests: list[Manifest], kind: str, prefix: str) -> Manifest:
    """The one manifest of `kind` whose name is `prefix` plus Kustomize's generator hash (``prefix-…``)."""
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].startswith(f"{prefix}-")]
    return found
