"""A small renderer for the subset of Kustomize that deploy/ uses (resources, namespace, images).

Anything else in a kustomization.yaml is an error, so deploy/ cannot quietly grow a feature the tests do
not render.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED = frozenset({"apiVersion", "kind", "namespace", "resources", "images"})
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "PersistentVolume",
    }
)
POD_TEMPLATES = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def render(directory: Path) -> list[Manifest]:
    """The manifests ``kubectl kustomize directory`` would print (for the supported subset)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported fields {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise ValueError(f"{directory}/kustomization.yaml: kind must be Kustomization")
    manifests: list[Manifest] = []
    for entry in kustomization.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            manifests += render(path)
        else:
            manifests += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    manifests = [copy.deepcopy(m) for m in manifests]
    namespace = kustomization.get("namespace")
    if namespace:
        for manifest in manifests:
            _set_namespace(manifest, namespace)
    for image in kustomization.get("images") or []:
        for manifest in manifests:
            _set_image(manifest, image)
    seen: set[tuple[str, str, str]] = set()
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"])
        if key in seen:
            raise ValueError(f"{directory}: {key} is defined twice")
        seen.add(key)
    return manifests


def _set_namespace(manifest: Manifest, namespace: str) -> None:
    kind = manifest["kind"]
    if kind in CLUSTER_SCOPED:
        if kind == "Namespace":
            manifest["metadata"]["name"] = namespace
        return
    manifest["metadata"]["namespace"] = namespace
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        for subject in manifest.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def _set_image(manifest: Manifest, image: dict[str, str]) -> None:
    if manifest["kind"] not in POD_TEMPLATES:
        return
    spec = manifest["spec"]["template"]["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        name, _, tag = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found
