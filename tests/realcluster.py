"""The real-control-plane tier: a real kube-apiserver (with etcd and the controller-manager).

Which cluster:
- ``GHAPP_TEST_KUBECONFIG=/path/kubeconfig``: any cluster (kind, k3d, a test cluster) — tests create and
  delete namespaces of their own named ``ghapp-test-…``, so the kubeconfig's user must be allowed to;
- else ``../shared/k8s/up`` beside the checkout, started once per test session in a temporary folder;
- else the tier is skipped, except when ``GHAPP_REQUIRE_REAL_CLUSTER=1`` (``.ci/run`` sets it): it fails.

There is no kubelet in ``../shared/k8s``: tests play it by patching ``pods/status``
(:meth:`Cluster.patch_status`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

SHARED_K8S = Path(__file__).resolve().parents[2] / "shared" / "k8s"


@dataclass(frozen=True)
class Cluster:
    """A reachable cluster, named by a kubeconfig file; helpers shell out to the real ``kubectl``."""

    kubeconfig: Path

    async def configuration(self) -> k8s.Configuration:
        """A kubernetes-asyncio configuration for the kubeconfig, as ``ghapp`` itself loads one."""
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return configuration

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl`` against this cluster (synchronously; for setup and teardown)."""
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    async def akubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> tuple[int, str, str]:
        """Run ``kubectl`` without blocking the event loop; returns (exit code, stdout, stderr)."""
        process = await asyncio.create_subprocess_exec(
            "kubectl",
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 60)
        code = process.returncode if process.returncode is not None else -1
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {code}: {err.decode()}")
        return code, out.decode(), err.decode()

    async def objects(
        self, kind: str, namespace: str, *, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of `kind` in `namespace` (as JSON dicts), optionally by label selector."""
        args = ["-n", namespace, "get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        _, out, _ = await self.akubectl(*args)
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    async def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        code, out, err = await self.akubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
        if code != 0:
            if "NotFound" in err:
                return None
            raise AssertionError(f"kubectl get {kind} {name} exited {code}: {err}")
        found: dict[str, Any] = json.loads(out)
        return found

    async def patch_status(self, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
        """Play the kubelet: a merge patch of the object's status subresource."""
        await self.akubectl(
            "-n",
            namespace,
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    def create_namespace(self, prefix: str = "ghapp-test") -> str:
        """A fresh namespace whose ``default`` ServiceAccount exists (so it accepts Pods)."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.kubectl("create", "namespace", name)
        for _ in range(600):
            if self.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0:
                return name
            time.sleep(0.05)  # polling the ServiceAccount controller, bounded by the loop
        raise AssertionError(f"namespace {name}: ServiceAccount default never appeared")

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float = 20.0, what: str = "condition"
) -> Any:
    """Await `probe` until it returns something truthy (returned), failing after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def required() -> bool:
    """Whether a missing control plane fails the run instead of skipping the tier (CI)."""
    return os.environ.get("GHAPP_REQUIRE_REAL_CLUSTER", "") not in ("", "0")


def start_shared(folder: Path) -> Path:
    """Start ``../shared/k8s`` in `folder`; returns the kubeconfig path."""
    done = subprocess.run(
        [str(SHARED_K8S / "up"), "--dir", str(folder)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        subprocess.run([str(SHARED_K8S / "down"), "--dir", str(folder)], capture_output=True, check=False)
        raise RuntimeError(f"../shared/k8s/up failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip())


def stop_shared(folder: Path) -> None:
    subprocess.run(
        [str(SHARED_K8S / "down"), "--dir", str(folder)], capture_output=True, check=False, timeout=120
    )
