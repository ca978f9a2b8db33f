"""Tests for the Kubernetes API emulator, exercised through the real kubernetes_asyncio client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fakes.kube import KubeEmulator

NS = "runners"


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator(seed=1)
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.fixture
async def api(kube: KubeEmulator) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(kube.configuration()) as api_client:
        yield api_client


def job_body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": "ghcr.io/actions/runner:2"}],
                }
            }
        },
    }


def secret_body(name: str, owner: dict[str, Any] | None = None, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": {"token": "s3cret"}}


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body)
    assert body["kind"] == "Status"
    assert body["code"] == exc.value.status
    return body


async def test_create_get_list_by_label_delete(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    created = await batch.create_namespaced_job(NS, job_body("job-b", {"app": "ghapp", "tier": "x"}))
    await batch.create_namespaced_job(NS, job_body("job-a", {"app": "ghapp"}))
    await batch.create_namespaced_job(NS, job_body("other", {"app": "else"}))
    assert created.metadata.uid
    assert created.metadata.namespace == NS
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    assert created.spec.template.metadata.labels["batch.kubernetes.io/job-name"] == "job-b"

    fetched = await batch.read_namespaced_job("job-b", NS)
    assert fetched.metadata.resource_version == created.metadata.resource_version

    listed = await batch.list_namespaced_job(NS, label_selector="app=ghapp")
    assert [j.metadata.name for j in listed.items] == ["job-a", "job-b"]
    assert listed.kind == "JobList"
    assert int(listed.metadata.resource_version) >= 3
    selectors = {
        "app in (ghapp,else),!tier": ["job-a", "other"],
        "app!=ghapp": ["other"],
        "tier": ["job-b"],
        "app notin (else)": ["job-a", "job-b"],
        "app==else": ["other"],
    }
    for selector, expected in selectors.items():
        result = await batch.list_namespaced_job(NS, label_selector=selector)
        assert [j.metadata.name for j in result.items] == expected, selector
    by_field = await batch.list_namespaced_job(NS, field_selector="metadata.name=other")
    assert [j.metadata.name for j in by_field.items] == ["other"]
    everywhere = await batch.list_job_for_all_namespaces()
    assert len(everywhere.items) == 3

    await batch.delete_namespaced_job("job-b", NS, propagation_policy="Background")
    with pytest.raises(ApiException) as exc:
        await batch.read_namespaced_job("job-b", NS)
    assert exc.value.status == 404
    assert status_of(exc)["reason"] == "NotFound"
    assert kube.get("jobs", NS, "job-b") is None
    assert [w.verb for w in kube.writes()] == ["create", "create", "create", "delete"]


async def test_duplicate_create_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(NS, secret_body("dup"))
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_secret(NS, secret_body("dup"))
    assert exc.value.status == 409
    assert status_of(exc)["reason"] == "AlreadyExists"


async def test_secret_string_data_generate_name_and_dry_run(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    body = {"metadata": {"generateName": "runner-"}, "stringData": {"token": "abc"}}
    created = await core.create_namespaced_secret(NS, body)
    assert created.metadata.name.startswith("runner-")
    assert len(created.metadata.name) == len("runner-") + 5
    assert created.data == {"token": "YWJj"}
    assert created.type == "Opaque"
    await core.create_namespaced_secret(NS, secret_body("dry"), dry_run="All")
    assert kube.get("secrets", NS, "dry") is None
    assert [s["metadata"]["name"] for s in kube.objects("secrets", NS)] == [created.metadata.name]


async def test_owner_reference_garbage_collection(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job = await batch.create_namespaced_job(NS, job_body("gc"), _preload_content=False)
    job_dict = json.loads(await job.read())
    await core.create_namespaced_secret(NS, secret_body("gc-token", owner=job_dict))
    pod = kube.add_pod_for_job(NS, "gc", phase="Pending", waiting_reason="ImagePullBackOff")
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"

    await batch.delete_namespaced_job("gc", NS, propagation_policy="Background")
    assert kube.get("secrets", NS, "gc-token") is None
    assert kube.objects("pods", NS) == []


async def test_job_delete_without_policy_orphans_like_batch_v1(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    await batch.create_namespaced_job(NS, job_body("orphan"))
    owner = kube.get("jobs", NS, "orphan")
    assert owner is not None
    await core.create_namespaced_secret(NS, secret_body("orphan-token", owner=owner))
    await batch.delete_namespaced_job("orphan", NS)
    secret = kube.get("secrets", NS, "orphan-token")
    assert secret is not None
    assert "ownerReferences" not in secret["metadata"]


async def test_dangling_owner_is_garbage_collected(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    fake_owner = {"metadata": {"name": "gone", "uid": "00000000-0000-4000-8000-000000000000"}}
    created = await core.create_namespaced_secret(NS, secret_body("dangling", owner=fake_owner))
    assert created.metadata.name == "dangling"
    assert kube.get("secrets", NS, "dangling") is None


async def test_watch_sees_added_modified_deleted(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    await batch.create_namespaced_job(NS, job_body("watched", {"app": "ghapp"}))
    seen: list[tuple[str, str]] = []
    async with watch.Watch() as w:
        stream = w.stream(batch.list_namespaced_job, NS, label_selector="app=ghapp", timeout_seconds=5)
        async for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "ADDED":
                kube.finish_job(NS, "watched")
            elif event["type"] == "MODIFIED":
                assert event["object"].status.succeeded == 1
                assert event["object"].status.conditions[0].type == "Complete"
                await batch.delete_namespaced_job("watched", NS, propagation_policy="Background")
            else:
                break
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


async def test_watch_resumes_from_list_resource_version(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_secret(NS)
    await core.create_namespaced_secret(NS, secret_body("later"))
    await core.create_namespaced_secret("elsewhere", secret_body("not-mine"))
    async with watch.Watch() as w:
        stream = w.stream(
            core.list_namespaced_secret,
            NS,
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        )
        first = await stream.__anext__()
        bookmark = await stream.__anext__()
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "later")
    assert bookmark["type"] == "BOOKMARK"


async def test_watch_with_expired_resource_version_gets_410(
    kube: KubeEmulator, api: client.ApiClient
) -> None:
    for i in range(1005):
        kube.put_object("configmaps", {"metadata": {"name": f"cm-{i}", "namespace": NS}})
    core = client.CoreV1Api(api)

    async def drain() -> None:
        async with watch.Watch() as w:
            async for _ in w.stream(
                core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=5
            ):
                pass

    with pytest.raises(ApiException) as exc:
        await drain()
    assert exc.value.status == 410


async def test_close_ends_open_watch(kube: KubeEmulator) -> None:
    kube.put_object("leases", {"metadata": {"name": "leader", "namespace": NS}, "spec": {}})
    url = f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?watch=true"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        first = json.loads(await response.content.readline())
        assert first["type"] == "ADDED"
        await kube.close()
        assert await response.content.read() == b""


async def test_lease_update_with_stale_resource_version_conflicts(api: client.ApiClient) -> None:
    coordination = client.CoordinationV1Api(api)
    body = {"metadata": {"name": "ghapp-leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    lease = await coordination.create_namespaced_lease(NS, body)
    stale = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    updated = await coordination.replace_namespaced_lease("ghapp-leader", NS, lease)
    assert int(updated.metadata.resource_version) > int(stale)
    lease.spec.holder_identity = "c"
    lease.metadata.resource_version = stale
    with pytest.raises(ApiException) as exc:
        await coordination.replace_namespaced_lease("ghapp-leader", NS, lease)
    assert exc.value.status == 409
    assert "the object has been modified" in status_of(exc)["message"]


@pytest.mark.parametrize(
    ("resource", "body", "field"),
    [
        ("secrets", secret_body("Bad_Name"), "metadata.name"),
        ("jobs", job_body("j" * 64), "metadata.name"),
        ("jobs", job_body("ok", {"app": "bad value!"}), "metadata.labels"),
        ("jobs", job_body("ok", {"app": "v" * 64}), "metadata.labels"),
        ("secrets", secret_body("ok", **{"-bad-key": "v"}), "metadata.labels"),
    ],
)
async def test_validation_rejects(
    api: client.ApiClient, resource: str, body: dict[str, Any], field: str
) -> None:
    create = {
        "secrets": client.CoreV1Api(api).create_namespaced_secret,
        "jobs": client.BatchV1Api(api).create_namespaced_job,
    }[resource]
    with pytest.raises(ApiException) as exc:
        await create(NS, body)
    assert exc.value.status == 422
    status = status_of(exc)
    assert status["reason"] == "Invalid"
    assert field in status["message"]
    assert status["details"]["causes"][0]["field"] == field


async def test_job_rules(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    no_policy = job_body("no-policy")
    del no_policy["spec"]["template"]["spec"]["restartPolicy"]
    with pytest.raises(ApiException) as exc:
        await batch.create_namespaced_job(NS, no_policy)
    assert exc.value.status == 422
    await batch.create_namespaced_job(NS, job_body("fixed"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "runner", "image": "other"}]}}}}
    with pytest.raises(ApiException) as exc:
        await batch.patch_namespaced_job("fixed", NS, patch)
    assert exc.value.status == 422
    assert "spec.template" in status_of(exc)["message"]
    # status is only writable through the status subresource
    await batch.patch_namespaced_job("fixed", NS, {"status": {"active": 1}})
    assert kube.get("jobs", NS, "fixed")["status"] == {}  # type: ignore[index]
    await batch.patch_namespaced_job_status("fixed", NS, {"status": {"active": 1}})
    assert kube.get("jobs", NS, "fixed")["status"] == {"active": 1}  # type: ignore[index]


async def test_secret_data_rules(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_secret(NS, {"metadata": {"name": "b64"}, "data": {"k": "not base64!"}})
    assert exc.value.status == 400
    body = {"metadata": {"name": "frozen"}, "data": {"k": "dg=="}, "immutable": True}
    await core.create_namespaced_secret(NS, body)
    with pytest.raises(ApiException) as exc:
        await core.patch_namespaced_secret("frozen", NS, {"data": {"k": "dw=="}})
    assert exc.value.status == 422
    labelled = await core.patch_namespaced_secret("frozen", NS, {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.labels == {"a": "b"}


async def test_patch_content_types(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(
        NS, {"metadata": {"name": "cm", "labels": {"a": "1"}}, "data": {"x": "1"}}
    )
    merged = await core.patch_namespaced_config_map(
        "cm",
        NS,
        {"metadata": {"labels": {"a": None, "b": "2"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"b": "2"}
    patched = await core.patch_namespaced_config_map(
        "cm", NS, [{"op": "add", "path": "/data/y", "value": "2"}, {"op": "remove", "path": "/data/x"}]
    )
    assert patched.data == {"y": "2"}
    unchanged = await core.patch_namespaced_config_map("cm", NS, {"data": {"y": "2"}})
    assert unchanged.metadata.resource_version == patched.metadata.resource_version
    content_types = [r.verb for r in kube.requests if r.verb == "patch"]
    assert len(content_types) == 3


async def test_fail_next_and_error_rate(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(NS, secret_body("flaky"))
    kube.fail_next(1, verb="get", resource="secrets")
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_secret("flaky", NS)
    assert exc.value.status == 500
    assert status_of(exc)["reason"] == "InternalError"
    assert (await core.read_namespaced_secret("flaky", NS)).metadata.name == "flaky"
    assert [r.status for r in kube.requests if r.verb == "get"] == [500, 200]

    kube.error_rate = 1.0
    with pytest.raises(ApiException) as exc:
        await core.list_namespaced_secret(NS)
    assert exc.value.status == 500
    kube.error_rate = 0.0
    assert len((await core.list_namespaced_secret(NS)).items) == 1


async def test_self_subject_access_review(kube: KubeEmulator, api: client.ApiClient) -> None:
    authz = client.AuthorizationV1Api(api)

    async def allowed(verb: str, resource: str, group: str = "") -> bool:
        attrs = {"namespace": NS, "verb": verb, "group": group, "resource": resource}
        review = await authz.create_self_subject_access_review({"spec": {"resourceAttributes": attrs}})
        return bool(review.status.allowed)

    assert await allowed("delete", "jobs", "batch")
    kube.rbac_rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]},
    ]
    assert await allowed("create", "jobs", "batch")
    assert not await allowed("delete", "jobs", "batch")
    assert await allowed("patch", "secrets")
    assert not await allowed("get", "leases", "coordination.k8s.io")
    assert kube.writes() == []


async def test_pagination_with_limit_and_continue(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for i in range(5):
        kube.put_object("secrets", {"metadata": {"name": f"s-{i}", "namespace": NS}})
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = await core.list_namespaced_secret(NS, limit=2, _continue=token)
        names += [s.metadata.name for s in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 5 - len(names)
    assert names == [f"s-{i}" for i in range(5)]
    assert pages == 3


async def test_delete_collection_and_namespaces(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": {"app": app}}})
    await core.delete_collection_namespaced_config_map(NS, label_selector="app=x")
    assert [c["metadata"]["name"] for c in kube.objects("configmaps")] == ["c"]
    namespace = await core.read_namespace("anything")
    assert namespace.status.phase == "Active"
    assert NS in [n.metadata.name for n in (await core.list_namespace()).items]


async def test_watch_label_transitions_and_field_selector(kube: KubeEmulator, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    listed = await core.list_namespaced_config_map(NS)
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "m", "labels": {"app": "x"}}})
    await core.patch_namespaced_config_map("m", NS, {"metadata": {"labels": {"app": "y"}}})
    await core.patch_namespaced_config_map("m", NS, {"metadata": {"labels": {"app": "x"}}})
    seen = []
    async with watch.Watch() as w:
        stream = w.stream(
            core.list_namespaced_config_map,
            NS,
            label_selector="app=x",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=5,
        )
        async for event in stream:
            seen.append(event["type"])
            if len(seen) == 3:
                break
    assert seen == ["ADDED", "DELETED", "ADDED"]
    with pytest.raises(ApiException) as exc:
        await core.list_namespaced_config_map(NS, field_selector="spec.nodeName=n1")
    assert exc.value.status == 400


async def test_enforced_rbac_and_foreground_delete(kube: KubeEmulator, api: client.ApiClient) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job = await batch.create_namespaced_job(NS, job_body("fg"))
    owner = {"metadata": {"name": "fg", "uid": job.metadata.uid}}
    await core.create_namespaced_secret(NS, secret_body("fg-token", owner=owner))
    kube.rbac_rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "delete"]}]
    kube.enforce_rbac = True
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_secret("fg-token", NS)
    assert exc.value.status == 403
    await batch.delete_namespaced_job("fg", NS, body={"propagationPolicy": "Foreground"})
    assert kube.objects("secrets") == []
    assert kube.objects("jobs") == []


async def test_events_are_served_in_both_api_groups(kube: KubeEmulator, api: client.ApiClient) -> None:
    body = {
        "metadata": {"name": "job-failed.1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "ghapp",
        "reportingInstance": "ghapp-0",
        "action": "Launch",
        "reason": "ImagePullBackOff",
        "type": "Warning",
        "note": "runner image cannot be pulled",
        "regarding": {"kind": "Job", "name": "job-failed", "namespace": NS},
    }
    await client.EventsV1Api(api).create_namespaced_event(NS, body)
    core_events = await client.CoreV1Api(api).list_namespaced_event(NS)
    assert core_events.items[0].message == "runner image cannot be pulled"
    assert core_events.items[0].involved_object.name == "job-failed"
    assert kube.objects("events", NS)[0]["note"] == "runner image cannot be pulled"
