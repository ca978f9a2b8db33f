"""The real control plane: what the API server decides (validation, ownership, garbage collection, the Job
controller) is proven here, on kube-apiserver, etcd and kube-controller-manager (tests/realcluster.py)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

from .conftest import ORG_INSTALLATION, Ghapp
from .realcluster import Cluster, eventually

LINUX = ["self-hosted", "linux", "x64"]


async def test_a_queued_job_becomes_a_job_and_its_secret_on_a_real_api_server(
    real_ghapp_with: Callable[..., Awaitable[Ghapp]], cluster: Cluster, cluster_namespace: str
) -> None:
    ghapp = await real_ghapp_with()
    job_id = await ghapp.queue(installation_id=ORG_INSTALLATION, repository="acme/webapp", labels=LINUX)
    await ghapp.settle()
    name = f"ghapp-{job_id}"

    job = await cluster.get("job", name, cluster_namespace)
    secret = await cluster.get("secret", name, cluster_namespace)
    assert job is not None
    assert secret is not None
    # the registration token is only in the Secret, which the Job owns
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token
    assert token not in str(job)
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name, job["metadata"]["uid"])

    # the garbage collector removes the Secret with its Job
    await cluster.akubectl("-n", cluster_namespace, "delete", "job", name, "--cascade=background")

    async def secret_gone() -> bool:
        return await cluster.get("secret", name, cluster_namespace) is None

    await eventually(secret_gone, what="the runner Secret garbage-collected with its Job")
