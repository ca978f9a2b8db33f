"""A kubeconfig file pointing at the Kubernetes emulator, for commands run as a user would run them."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(path: Path, *, server: str, namespace: str = "default") -> Path:
    """Write a kubeconfig whose current context talks to `server` (no credentials) and return its path."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {}}],
                "contexts": [
                    {
                        "name": "emulator",
                        "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                    }
                ],
                "current-context": "emulator",
            }
        )
    )
    return path
