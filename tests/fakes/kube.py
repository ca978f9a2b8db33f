"""A small, stateful Kubernetes API server emulator for tests.

The emulator speaks the real Kubernetes REST shapes (Status errors, ``*List`` kinds, newline-delimited
watch streams) so that project code can talk to it through the real ``kubernetes_asyncio`` client::

    emulator = KubeEmulator()
    await emulator.start()
    async with kubernetes_asyncio.client.ApiClient(emulator.configuration()) as api:
        ...
    await emulator.close()

Deliberately realistic behaviours (code must not rely on an emulator that is more lenient than a cluster):

* ``DELETE`` of a ``batch/v1`` Job without ``propagationPolicy`` **orphans** its dependents (the real
  default for batch/v1, with the same ``Warning`` header); pass ``propagationPolicy=Background``.
* List items carry no ``kind``/``apiVersion`` (like the real API server).
* A no-op update does not bump ``resourceVersion`` and fires no watch event.
* Job and Pod ``status`` is only writable through the ``/status`` subresource (and the test helpers).
* Invalid base64 in Secret ``data`` is a 400 BadRequest (a decoding error), not a 422.
* Strategic merge patches are applied as RFC 7386 JSON merge patches (lists are replaced, not merged).

Controllers and a kubelet, scripted (``job_controller`` on by default):

* The Job controller makes one Pod per new Job (Pending, unscheduled) — or, when the Pod's ServiceAccount
  does not exist in the namespace (``default`` always does), records a ``FailedCreate`` Event on the Job
  with the API server's message, as kube-controller-manager does. A Pod that ends ``Failed`` fails its Job
  (``backoffLimit: 0``: condition ``Failed``, reason ``BackoffLimitExceeded``); ``Succeeded`` completes it.
* The kubelet is a test's: `run_pod`, `image_pull_failing`, `unschedulable`, `exit_pod`, `evict_pod` move a
  Job's Pod through Pending → Running → Succeeded / Failed with the container states, exit codes and reasons
  a real kubelet writes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import json
import random
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import kubernetes_asyncio.client
from aiohttp import web

Obj = dict[str, Any]

__all__ = ["KubeEmulator", "RecordedRequest"]

_HISTORY_SIZE = 1000
_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_TRUE_VALUES = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_JOB_ORPHAN_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background '
    'to remove them or set propagationPolicy=Orphan to suppress this warning"'
)
# Field selectors the real API server supports besides metadata.name / metadata.namespace.
_EXTRA_FIELDS = {
    "pods": {
        "status.phase",
        "spec.nodeName",
        "spec.serviceAccountName",
        "spec.restartPolicy",
        "status.podIP",
    },
    "secrets": {"type"},
    "events": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
}


@dataclass(frozen=True)
class _Kind:
    resource: str
    group: str
    version: str
    kind: str
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_KINDS = {
    k.resource: k
    for k in (
        _Kind("secrets", "", "v1", "Secret"),
        _Kind("pods", "", "v1", "Pod", status_subresource=True),
        _Kind("configmaps", "", "v1", "ConfigMap"),
        _Kind("serviceaccounts", "", "v1", "ServiceAccount"),
        _Kind("events", "", "v1", "Event"),
        _Kind("jobs", "batch", "v1", "Job", status_subresource=True),
        _Kind("leases", "coordination.k8s.io", "v1", "Lease"),
    )
}
_GROUP_RESOURCES: dict[tuple[str, str], frozenset[str]] = {
    ("", "v1"): frozenset({"secrets", "pods", "configmaps", "serviceaccounts", "events"}),
    ("batch", "v1"): frozenset({"jobs"}),
    ("coordination.k8s.io", "v1"): frozenset({"leases"}),
    ("events.k8s.io", "v1"): frozenset({"events"}),
}


@dataclass
class RecordedRequest:
    """One API request as seen by the emulator (``status`` is filled in once answered)."""

    method: str
    path: str
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    status: int = 0
    query: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    """An error answered to the client as a ``Status`` object."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "InternalError")
        self.details = details

    def body(self) -> Obj:
        return _status_body(self.code, self.reason, self.message, self.details)


@dataclass(frozen=True)
class _Route:
    verb: str
    resource: str
    kind: _Kind | None
    namespace: str | None
    name: str | None
    subresource: str | None = None


@dataclass(frozen=True)
class _Change:
    rv: int
    resource: str
    namespace: str
    type: str
    obj: Obj
    old: Obj | None


@dataclass
class _Selector:
    labels: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)

    def matches(self, obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        for op, key, values in self.labels:
            present = key in labels
            ok = {
                "exists": present,
                "!exists": not present,
                "in": present and labels[key] in values,
                "notin": not present or labels[key] not in values,
            }[op]
            if not ok:
                return False
        return all((_field_value(obj, path) == value) == (op == "=") for op, path, value in self.fields)


@dataclass
class _Watcher:
    kind: _Kind
    namespace: str | None
    selector: _Selector
    bookmarks: bool = False
    queue: asyncio.Queue[_Change | Obj | None] = field(default_factory=asyncio.Queue)

    def event_for(self, change: _Change) -> Obj | None:
        """Translate a change into the event this watcher sees (selector transitions become ADDED/DELETED)."""
        if change.resource != self.kind.resource or self.namespace not in (None, change.namespace):
            return None
        now = self.selector.matches(change.obj)
        before = change.old is not None and self.selector.matches(change.old)
        kind = change.type
        if change.type == "MODIFIED":
            kind = {(True, True): "MODIFIED", (False, True): "ADDED", (True, False): "DELETED"}.get(
                (before, now), ""
            )
        elif not now:
            kind = ""
        return {"type": kind, "object": _as_group(self.kind, change.obj)} if kind else None


# --------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _not_found(kind: _Kind, name: str) -> _ApiError:
    details = {"name": name, "group": kind.group, "kind": kind.resource}
    return _ApiError(404, f'{kind.qualified_resource} "{name}" not found', details=details)


def _conflict(kind: _Kind, name: str, why: str) -> _ApiError:
    message = f'Operation cannot be fulfilled on {kind.qualified_resource} "{name}": {why}'
    return _ApiError(409, message, details={"name": name, "group": kind.group, "kind": kind.resource})


def _cause_reason(message: str) -> str:
    for prefix, reason in (
        ("Required value", "FieldValueRequired"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Unsupported value", "FieldValueNotSupported"),
    ):
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def _invalid(kind: _Kind, name: str, errors: list[tuple[str, str]]) -> _ApiError:
    texts = [f"{path}: {message}" for path, message in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [{"reason": _cause_reason(m), "message": m, "field": p} for p, m in errors]
    details = {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes}
    return _ApiError(422, f'{kind.qualified_kind} "{name}" is invalid: {summary}', details=details)


def _int_param(query: dict[str, str], name: str) -> int:
    try:
        return int(query.get(name) or 0)
    except ValueError as exc:
        raise _ApiError(400, f"invalid {name} parameter: {query[name]!r}") from exc


def _parse_bool(value: str | None) -> bool:
    return value in _TRUE_VALUES


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _split_terms(text: str) -> list[str]:
    """Split a selector on commas that are not inside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _parse_label_selector(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    requirements: list[tuple[str, str, tuple[str, ...]]] = []
    for term in _split_terms(text):
        set_match = re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^)]*)\)", term)
        values: tuple[str, ...]
        if term.startswith("!"):
            op, key, values = "!exists", term[1:].strip(), ()
        elif set_match:
            key, op = set_match.group(1), set_match.group(2)
            values = tuple(v.strip() for v in set_match.group(3).split(","))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            op, values = "notin", (value.strip(),)
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            op, values = "in", (value.strip(),)
        else:
            op, key, values = "exists", term, ()
        key = key.strip()
        if _label_key_errors(key) or any(_label_value_errors(v) for v in values):
            raise _ApiError(400, f"unable to parse requirement: invalid label selector term {term!r}")
        requirements.append((op, key, values))
    return requirements


def _parse_field_selector(resource: str, text: str) -> list[tuple[str, str, str]]:
    allowed = {"metadata.name", "metadata.namespace"} | _EXTRA_FIELDS.get(resource, set())
    requirements = []
    for term in _split_terms(text):
        match = re.fullmatch(r"([^!=]+)(!=|==|=)(.*)", term)
        if not match:
            raise _ApiError(400, f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if path not in allowed:
            raise _ApiError(400, f'field label not supported: "{path}"')
        requirements.append(("!=" if op == "!=" else "=", path, value))
    return requirements


def _make_selector(resource: str, query: dict[str, str]) -> _Selector:
    return _Selector(
        labels=_parse_label_selector(query.get("labelSelector", "")),
        fields=_parse_field_selector(resource, query.get("fieldSelector", "")),
    )


def _merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def _json_patch(doc: Obj, operations: list[Any]) -> Obj:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    result: Obj = copy.deepcopy(doc)
    for operation in operations:
        op = operation["op"]
        tokens = _pointer(operation["path"])
        if not tokens:
            raise ValueError("patching the document root is not supported")
        if op == "test":
            if _resolve(result, tokens) != operation["value"]:
                raise ValueError(f"testing value {operation['path']} failed")
            continue
        if op in ("move", "copy"):
            source = _pointer(operation["from"])
            value = copy.deepcopy(_resolve(result, source))
            if op == "move":
                _remove_at(result, source)
        else:
            value = copy.deepcopy(operation.get("value"))
        if op == "remove":
            _remove_at(result, tokens)
        elif op == "replace":
            _remove_at(result, tokens)
            _add_at(result, tokens, value)
        elif op in ("add", "move", "copy"):
            _add_at(result, tokens, value)
        else:
            raise ValueError(f"unsupported JSON patch operation {op!r}")
    return result


def _remove_at(doc: Any, tokens: list[str]) -> None:
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, list):
        del parent[int(tokens[-1])]
    else:
        del parent[tokens[-1]]


def _add_at(doc: Any, tokens: list[str], value: Any) -> None:
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, list):
        parent.insert(len(parent) if tokens[-1] == "-" else int(tokens[-1]), value)
    elif isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        raise ValueError(f"cannot add below a scalar at {'/'.join(tokens)}")


def _name_errors(name: str, *, dns_label: bool) -> list[str]:
    limit, regex, what = (63, _DNS_LABEL_RE, "label") if dns_label else (253, _SUBDOMAIN_RE, "subdomain")
    chars = "'-'" if dns_label else "'-' or '.'"
    errors = []
    if len(name) > limit:
        errors.append(f"must be no more than {limit} characters")
    if not regex.fullmatch(name):
        errors.append(
            f"a lowercase RFC 1123 {what} must consist of lower case alphanumeric characters, {chars}, "
            "and must start and end with an alphanumeric character"
        )
    return errors


def _label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def _label_key_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errors = [f"prefix part {e}" for e in (_name_errors(prefix, dns_label=False) if prefix else [])]
    if "/" in key and not prefix:
        errors.append("prefix part must be non-empty")
    if not name:
        errors.append("name part must be non-empty")
    else:
        errors.extend(f"name part {e}" for e in _label_value_errors(name))
    return errors


def _validate_map_keys(path: str, mapping: Any, *, values: bool) -> list[tuple[str, str]]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise _ApiError(400, f"{path}: must be a map of string to string")
    errors = []
    for key, value in mapping.items():
        errors += [(path, f'Invalid value: "{key}": {e}') for e in _label_key_errors(key)]
        if values:
            errors += [(path, f'Invalid value: "{value}": {e}') for e in _label_value_errors(value)]
    return errors


def _validate_owner_refs(refs: Any) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if not isinstance(refs, list):
        return [("metadata.ownerReferences", "Invalid value: must be a list")] if refs is not None else []
    for ref in refs:
        for key in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(key):
                errors.append(
                    (f"metadata.ownerReferences.{key}", f'Invalid value: "": {key} must not be empty')
                )
    if sum(1 for r in refs if isinstance(r, dict) and r.get("controller")) > 1:
        errors.append(
            ("metadata.ownerReferences", "Invalid value: Only one reference can have Controller set")
        )
    return errors


def _validate_data_map(kind: _Kind, obj: Obj) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    encoded_fields = ("data",) if kind.resource == "secrets" else ("binaryData",)
    for field_name in ("data", "binaryData"):
        mapping = obj.get(field_name) or {}
        for key, value in mapping.items():
            if not _CONFIG_KEY_RE.fullmatch(key):
                msg = (
                    f'Invalid value: "{key}": a valid config key must consist of alphanumeric characters, '
                    + ("'-', '_' or '.'")
                )
                errors.append((f"{field_name}[{key}]", msg))
            if field_name in encoded_fields:
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError, TypeError) as exc:
                    message = (
                        f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: illegal base64 data'
                    )
                    raise _ApiError(400, message) from exc
    return errors


def _validate_job_spec(obj: Obj) -> list[tuple[str, str]]:
    spec = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
    errors: list[tuple[str, str]] = []
    if spec.get("restartPolicy") not in ("Never", "OnFailure"):
        msg = 'Required value: valid values: "OnFailure", "Never"'
        if spec.get("restartPolicy"):
            msg = f'Unsupported value: "{spec["restartPolicy"]}": supported values: "OnFailure", "Never"'
        errors.append(("spec.template.spec.restartPolicy", msg))
    errors += _validate_containers("spec.template.spec", spec)
    return errors


def _validate_containers(path: str, spec: Obj) -> list[tuple[str, str]]:
    containers = spec.get("containers") or []
    if not containers:
        return [(f"{path}.containers", "Required value")]
    errors = []
    for i, container in enumerate(containers):
        name = container.get("name") or ""
        errors += [
            (f"{path}.containers[{i}].name", f'Invalid value: "{name}": {e}')
            for e in _name_errors(name, dns_label=True)
        ]
        if not container.get("image"):
            errors.append((f"{path}.containers[{i}].image", "Required value"))
    return errors


def _validate_event(kind: _Kind, obj: Obj) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if obj.get("type") not in (None, "", "Normal", "Warning"):
        errors.append(("type", f'Unsupported value: "{obj["type"]}": supported values: "Normal", "Warning"'))
    if kind.group == "events.k8s.io":
        for key in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
            if not obj.get(key):
                errors.append((key, "Required value"))
    return errors


def _validate(kind: _Kind, obj: Obj) -> list[tuple[str, str]]:
    """Validate an object the way the real API server would; returns (field, message) pairs."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    dns_label = kind.resource == "jobs"
    errors = [
        ("metadata.name", f'Invalid value: "{name}": {e}') for e in _name_errors(name, dns_label=dns_label)
    ]
    errors += _validate_map_keys("metadata.labels", meta.get("labels"), values=True)
    errors += _validate_map_keys("metadata.annotations", meta.get("annotations"), values=False)
    errors += _validate_owner_refs(meta.get("ownerReferences"))
    if kind.resource in ("secrets", "configmaps"):
        errors += _validate_data_map(kind, obj)
    elif kind.resource == "jobs":
        errors += _validate_job_spec(obj)
    elif kind.resource == "pods":
        errors += _validate_containers("spec", obj.get("spec") or {})
    elif kind.resource == "events":
        errors += _validate_event(kind, obj)
    return errors


def _immutable_errors(kind: _Kind, old: Obj, new: Obj) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if kind.resource == "jobs":
        for key in ("template", "selector"):
            if (old.get("spec") or {}).get(key) != (new.get("spec") or {}).get(key):
                errors.append((f"spec.{key}", "Invalid value: field is immutable"))
    if kind.resource in ("secrets", "configmaps") and old.get("immutable"):
        for key in ("data", "binaryData", "immutable"):
            if old.get(key) != new.get(key):
                errors.append((key, "Forbidden: field is immutable when `immutable` is set"))
    if kind.resource == "secrets" and old.get("type") != new.get("type"):
        errors.append(("type", "Invalid value: field is immutable"))
    return errors


_EVENT_FIELDS = (  # events.k8s.io/v1 field -> core/v1 field
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)


def _as_group(kind: _Kind, obj: Obj) -> Obj:
    """A deep copy of ``obj`` as served by ``kind``'s group (converts Events between v1 and events.k8s.io)."""
    result = copy.deepcopy(obj)
    if kind.resource != "events" or result.get("apiVersion") == kind.api_version:
        return result
    to_core = kind.group == ""
    for new_field, old_field in _EVENT_FIELDS:
        source, target = (new_field, old_field) if to_core else (old_field, new_field)
        if source in result:
            result[target] = result.pop(source)
    if to_core:
        result.setdefault("involvedObject", {})
    result.update(kind=kind.kind, apiVersion=kind.api_version)
    return result


def _normalize(kind: _Kind, obj: Obj) -> None:
    """Server-side conversions applied on every write (e.g. Secret stringData → data)."""
    obj.setdefault("kind", kind.kind)
    obj.setdefault("apiVersion", kind.api_version)
    if kind.resource == "secrets":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()


def _default_job(job: Obj) -> None:
    """Job defaulting done by the real API server on create (selector and template labels)."""
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec = job.setdefault("spec", {})
    generated = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **generated}
    for key, value in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1), ("suspend", False)):
        spec.setdefault(key, value)
    spec.setdefault("completionMode", "NonIndexed")
    job.setdefault("status", {})


# --------------------------------------------------------------------------------------------- emulator


class KubeEmulator:
    """In-process Kubernetes API server emulator (see the module docstring)."""

    def __init__(self, *, seed: int = 0, validate: bool = True) -> None:
        self.validate = validate
        self.url = ""
        self.error_rate = 0.0
        self.requests: list[RecordedRequest] = []
        self.rbac_rules: list[Obj] | None = None
        self.enforce_rbac = False  # when True, API requests not allowed by rbac_rules get 403 Forbidden
        self._fault_rng = random.Random(seed)
        self._id_rng = random.Random(seed + 1_000_003)
        self._fail_rules: list[list[Any]] = []  # [remaining, status, verb, resource]
        self._watch_lines: list[list[Any]] = []  # [remaining, line, resource]
        self._stalls: list[tuple[str | None, str | None]] = []  # (verb, resource) of requests that hang
        self._unstalled = asyncio.Event()
        self.stalled = 0
        """Requests that have hung on a `stall` so far."""
        self._store: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in _KINDS}
        self._rv = 1  # never "0": that resourceVersion means "any" to watches
        self._history: deque[_Change] = deque(maxlen=_HISTORY_SIZE)
        self._history_floor = 0
        self._watchers: list[_Watcher] = []
        self._runner: web.AppRunner | None = None
        self.job_controller = True  # make each new Job's Pod (or a FailedCreate Event), like the real one

    # ----------------------------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Start serving on 127.0.0.1 (random port); returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        """Finish all open watch streams and stop the server."""
        self.unstall()
        self.end_watches()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def configuration(self) -> kubernetes_asyncio.client.Configuration:
        """A client configuration pointing at this emulator (no auth)."""
        configuration = kubernetes_asyncio.client.Configuration()
        configuration.host = self.url
        return configuration

    # ----------------------------------------------------------------------------------- state access

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Deep copies of all stored objects of ``resource`` (optionally in one namespace), sorted."""
        store = self._store[self._kind(resource).resource]
        return [copy.deepcopy(store[k]) for k in sorted(store) if namespace in (None, k[0])]

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """A deep copy of one stored object, or None."""
        obj = self._store[self._kind(resource).resource].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def put_object(self, resource: str, obj: Obj) -> Obj:
        """Insert or replace an object directly (no validation); fills in metadata, fires watch events."""
        kind = self._kind(resource)
        new = copy.deepcopy(obj)
        _normalize(kind, new)
        meta = new.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        if not meta.get("name"):
            meta["name"] = self._generate_name(meta.get("generateName") or "obj-")
        old = self._store[kind.resource].get((meta["namespace"], meta["name"]))
        meta.setdefault("uid", old["metadata"]["uid"] if old else self._new_uid())
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        return copy.deepcopy(self._write(kind.resource, new, old))

    def delete_object(self, resource: str, namespace: str, name: str) -> None:
        """Delete an object directly (Background propagation: its dependents go too); fires DELETED."""
        self._delete_tree(self._kind(resource).resource, (namespace, name), "Background")

    def set_job_status(self, namespace: str, name: str, status: Obj) -> None:
        """Replace a Job's status (as the job controller would); fires MODIFIED."""
        job = self._existing("jobs", namespace, name)
        job["status"] = copy.deepcopy(status)
        self._write("jobs", job, self._store["jobs"][(namespace, name)])

    def finish_job(self, namespace: str, name: str, *, succeeded: bool = True) -> None:
        """Mark a Job Complete (or Failed) like the job controller, and finish its running pods."""
        job = self._existing("jobs", namespace, name)
        status = job.setdefault("status", {})
        now = _now()
        status.setdefault("startTime", now)
        status["active"] = 0
        status["succeeded" if succeeded else "failed"] = 1
        condition = {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        if succeeded:
            status["completionTime"] = now
        else:
            condition.update(
                type="Failed",
                reason="BackoffLimitExceeded",
                message="Job has reached the specified backoff limit",
            )
        status["conditions"] = [*(status.get("conditions") or []), condition]
        self._write("jobs", job, self._store["jobs"][(namespace, name)])
        for pod in self._dependents(job["metadata"]["uid"], namespace):
            if pod[0] == "pods" and pod[2].get("status", {}).get("phase") in ("Pending", "Running", None):
                new_pod = copy.deepcopy(pod[2])
                new_pod.setdefault("status", {})["phase"] = "Succeeded" if succeeded else "Failed"
                self._write("pods", new_pod, pod[2])

    def add_pod_for_job(
        self, namespace: str, job_name: str, *, phase: str = "Pending", waiting_reason: str | None = None
    ) -> Obj:
        """Create a pod owned by the Job (as the job controller would); fires ADDED."""
        job = self._existing("jobs", namespace, job_name)
        uid = job["metadata"]["uid"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "batch.kubernetes.io/job-name": job_name,
            "job-name": job_name,
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
        }
        spec = template.get("spec") or {}
        state: Obj = {"waiting": {"reason": waiting_reason}} if waiting_reason else {}
        if not state and phase == "Running":
            state = {"running": {"startedAt": _now()}}
        container_statuses = [
            {
                "name": c.get("name", "runner"),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": phase == "Running",
                "restartCount": 0,
                "state": state or {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in spec.get("containers") or [{}]
        ]
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job_name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": self._generate_name(f"{job_name}-"),
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
                "uid": self._new_uid(),
                "creationTimestamp": _now(),
                "generation": 1,
            },
            "spec": spec,
            "status": {"phase": phase, "containerStatuses": container_statuses},
        }
        return copy.deepcopy(self._write("pods", pod, None))

    # ----------------------------------------------------------------------------------- the Job controller

    def _start_job(self, job: Obj) -> None:
        """What kube-controller-manager does with a new Job: its Pod, or a FailedCreate Event."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        account = pod_spec.get("serviceAccountName") or "default"
        if account != "default" and (namespace, account) not in self._store["serviceaccounts"]:
            pod_name = self._generate_name(f"{name}-")
            self.record_event(
                job,
                reason="FailedCreate",
                message=f'Error creating: pods "{pod_name}" is forbidden: error looking up service account '
                f'{namespace}/{account}: serviceaccount "{account}" not found',
                component="job-controller",
            )
            return
        pod = self.add_pod_for_job(namespace, name, phase="Pending")
        self._update_pod(pod, {"phase": "Pending", "containerStatuses": None})

    def record_event(
        self, obj: Obj, *, reason: str, message: str, component: str, type_: str = "Warning"
    ) -> Obj:
        """A core/v1 Event about `obj` (as a controller records one); fires ADDED."""
        meta = obj["metadata"]
        now = _now()
        event = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{meta['name']}.{self._new_uid()[:16]}",
                "namespace": meta["namespace"],
                "uid": self._new_uid(),
                "creationTimestamp": now,
            },
            "involvedObject": {
                "kind": obj.get("kind") or "Job",
                "apiVersion": obj.get("apiVersion") or "batch/v1",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return copy.deepcopy(self._write("events", event, None))

    def pods_of(self, namespace: str, job_name: str) -> list[Obj]:
        """The Pods of a Job (deep copies)."""
        return [
            copy.deepcopy(pod)
            for (ns, _), pod in sorted(self._store["pods"].items())
            if ns == namespace and (pod["metadata"].get("labels") or {}).get("job-name") == job_name
        ]

    def _job_pod(self, namespace: str, job_name: str) -> Obj:
        pods = self.pods_of(namespace, job_name)
        if not pods:
            raise KeyError(f"Job {namespace}/{job_name} has no Pod")
        return pods[-1]

    def _update_pod(self, pod: Obj, status: Obj) -> Obj:
        """Merge `status` into the stored Pod's status (None removes a key); fails or completes its Job."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        old = self._store["pods"][key]
        new = copy.deepcopy(old)
        merged = {**(new.get("status") or {}), **status}
        new["status"] = {k: v for k, v in merged.items() if v is not None}
        stored = self._write("pods", new, old)
        phase = new["status"].get("phase")
        owner = next(
            (r for r in new["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"), None
        )
        job = self._store["jobs"].get((key[0], owner["name"])) if owner else None
        finished = job is not None and (job.get("status") or {}).get("conditions")
        if owner and job is not None and not finished and phase in ("Succeeded", "Failed"):
            self.finish_job(key[0], owner["name"], succeeded=phase == "Succeeded")
        return copy.deepcopy(stored)

    # ----------------------------------------------------------------------------------- a test's kubelet

    def _container_status(self, pod: Obj, state: Obj, *, ready: bool = False) -> list[Obj]:
        return [
            {
                "name": c.get("name", "runner"),
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": ready,
                "state": copy.deepcopy(state)
                if c.get("name") == "runner"
                else {"running": {"startedAt": _now()}},
            }
            for c in (pod.get("spec") or {}).get("containers") or []
        ]

    def run_pod(self, namespace: str, job_name: str) -> Obj:
        """Scheduled, image pulled, the runner container running."""
        pod = self._job_pod(namespace, job_name)
        state = {"running": {"startedAt": _now()}}
        return self._update_pod(
            pod,
            {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
                "containerStatuses": self._container_status(pod, state, ready=True),
            },
        )

    def image_pull_failing(
        self, namespace: str, job_name: str, *, reason: str = "ImagePullBackOff", message: str = ""
    ) -> Obj:
        """Scheduled, but the runner image cannot be pulled (ErrImagePull, ImagePullBackOff, …)."""
        pod = self._job_pod(namespace, job_name)
        message = message or f'Back-off pulling image "{self._runner_image(pod)}"'
        state = {"waiting": {"reason": reason, "message": message}}
        return self._update_pod(
            pod,
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": self._container_status(pod, state),
            },
        )

    def unschedulable(self, namespace: str, job_name: str, *, since: str, message: str) -> Obj:
        """The scheduler finds no node (since `since`, an RFC 3339 time)."""
        pod = self._job_pod(namespace, job_name)
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": since,
        }
        return self._update_pod(pod, {"phase": "Pending", "conditions": [condition]})

    def exit_pod(self, namespace: str, job_name: str, *, exit_code: int, reason: str | None = None) -> Obj:
        """The runner container ends with `exit_code` (reason e.g. ``OOMKilled``; else Completed / Error)."""
        pod = self._job_pod(namespace, job_name)
        terminated = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        return self._update_pod(
            pod,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": self._container_status(pod, {"terminated": terminated}),
            },
        )

    def evict_pod(self, namespace: str, job_name: str, *, reason: str = "Evicted", message: str = "") -> Obj:
        """The kubelet (or the node's loss) stops the Pod: phase Failed with a pod-level reason."""
        pod = self._job_pod(namespace, job_name)
        message = message or "The node was low on resource: memory."
        return self._update_pod(pod, {"phase": "Failed", "reason": reason, "message": message})

    @staticmethod
    def _runner_image(pod: Obj) -> str:
        containers = (pod.get("spec") or {}).get("containers") or []
        return next((str(c.get("image", "")) for c in containers if c.get("name") == "runner"), "")

    # ----------------------------------------------------------------------------------- faults, records

    def fail_next(
        self, count: int, *, status: int = 500, verb: str | None = None, resource: str | None = None
    ) -> None:
        """Answer the next ``count`` matching API requests with ``status`` and a Status body."""
        self._fail_rules.append([count, status, verb, resource])

    def clear_faults(self) -> None:
        """Forget every fault still pending from `fail_next` and `send_first_on_watches`."""
        self._fail_rules.clear()
        self._watch_lines.clear()

    def send_first_on_watches(self, count: int, line: bytes, *, resource: str | None = None) -> None:
        """Start the next ``count`` watch streams (of `resource`) with the raw bytes `line`, then go on as
        usual: a corrupt, truncated or oversized event that no real API server should send."""
        self._watch_lines.append([count, line, resource])

    @property
    def watch_lines_pending(self) -> int:
        """How many watch streams `send_first_on_watches` has yet to start."""
        return sum(rule[0] for rule in self._watch_lines)

    def end_watches(self) -> None:
        """Finish every open watch stream normally, as the API server does when a watch times out."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)

    @property
    def watching(self) -> int:
        """Watch streams open now."""
        return len(self._watchers)

    def send_bookmarks(self) -> None:
        """Send each open watch that allows bookmarks one now, at the present resourceVersion (the real API
        server sends them when it likes: about once a minute, and shortly before it ends a watch; this one
        also sends one as each such watch starts)."""
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(self._bookmark(watcher.kind))

    def stall(self, *, verb: str | None = None, resource: str | None = None) -> None:
        """Let matching API requests hang (no answer at all) from now until `unstall` (or `close`)."""
        self._stalls.append((verb, resource))

    def unstall(self) -> None:
        """Answer every hanging request, and stop hanging new ones."""
        self._stalls.clear()
        self._unstalled.set()
        self._unstalled = asyncio.Event()

    def writes(self) -> list[RecordedRequest]:
        """Successful, non-dry-run, object-mutating requests (SelfSubjectAccessReviews are excluded)."""
        return [
            r
            for r in self.requests
            if r.verb in _WRITE_VERBS
            and 200 <= r.status < 300
            and r.resource != "selfsubjectaccessreviews"
            and r.query.get("dryRun") != "All"
        ]

    # ----------------------------------------------------------------------------------- HTTP layer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        discovery = _discovery(request.path) if request.method == "GET" else None
        if discovery is not None:
            return web.json_response(discovery)
        query = dict(request.query)
        try:
            route = _parse_route(request.method, request.path, query)
        except _ApiError as err:
            return web.json_response(err.body(), status=err.code)
        record = RecordedRequest(
            request.method, request.path, route.verb, route.resource, route.namespace, route.name, 0, query
        )
        self.requests.append(record)
        if any(verb in (None, route.verb) and kind in (None, route.resource) for verb, kind in self._stalls):
            self.stalled += 1
            await self._unstalled.wait()
        try:
            self._inject_fault(route)
            self._authorize(route)
            response = await self._serve(request, route, query, record)
        except _ApiError as err:
            response = web.json_response(err.body(), status=err.code)
            if err.code == 429:
                response.headers["Retry-After"] = "1"
        record.status = response.status
        return response

    def _inject_fault(self, route: _Route) -> None:
        for rule in self._fail_rules:
            if rule[0] > 0 and rule[2] in (None, route.verb) and rule[3] in (None, route.resource):
                rule[0] -= 1
                self._fail_rules = [r for r in self._fail_rules if r[0] > 0]
                raise _ApiError(rule[1], f"injected fault (HTTP {rule[1]})")
        if self.error_rate > 0 and self._fault_rng.random() < self.error_rate:
            raise _ApiError(500, "Internal error occurred: injected random fault")

    def _authorize(self, route: _Route) -> None:
        if not self.enforce_rbac or route.resource == "selfsubjectaccessreviews":
            return
        group = route.kind.group if route.kind else ""
        if not self._allowed(group, route.resource, route.subresource or "", route.verb, route.name or ""):
            where = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
            raise _ApiError(
                403,
                f'{route.resource} is forbidden: User "test" cannot {route.verb} resource '
                f'"{route.resource}" in API group "{group}"{where}',
            )

    def _allowed(self, group: str, resource: str, subresource: str, verb: str, name: str) -> bool:
        if self.rbac_rules is None:
            return True
        target = f"{resource}/{subresource}" if subresource else resource
        for rule in self.rbac_rules:
            resources = rule.get("resources") or []
            names = rule.get("resourceNames") or []
            if (
                {"*", group} & set(rule.get("apiGroups") or [])
                and ({"*", target} & set(resources) or (subresource and f"*/{subresource}" in resources))
                and {"*", verb} & set(rule.get("verbs") or [])
                and (not names or name in names)
            ):
                return True
        return False

    async def _serve(
        self, request: web.Request, route: _Route, query: dict[str, str], record: RecordedRequest
    ) -> web.StreamResponse:
        if route.resource == "namespaces":
            return web.json_response(self._namespaces(route))
        body = await _read_body(request)
        if route.resource == "selfsubjectaccessreviews":
            return web.json_response(self._review(body), status=201)
        kind = route.kind
        assert kind is not None
        namespace = route.namespace or ""
        dry_run = query.get("dryRun") == "All"
        if route.verb == "watch":
            return await self._watch(request, kind, route.namespace, query, record)
        if route.verb == "list":
            return web.json_response(self._list(kind, route.namespace, query))
        if route.verb == "get":
            return web.json_response(self._get(kind, namespace, route.name or ""))
        if route.verb == "create":
            return web.json_response(self._create(kind, namespace, body, dry_run), status=201)
        if route.verb in ("update", "patch"):
            content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
            new = self._patched(kind, namespace, route, body, content_type)
            return web.json_response(self._update(kind, namespace, route, new, dry_run))
        if route.verb == "delete":
            return self._delete_response(kind, namespace, route.name or "", query, body, dry_run)
        return web.json_response(self._delete_collection(kind, namespace, query, body, dry_run))

    # ----------------------------------------------------------------------------------- verbs

    def _namespaces(self, route: _Route) -> Obj:
        names = {"default", "kube-system", "kube-public"} | {k[0] for s in self._store.values() for k in s}
        if route.name:
            names = {route.name}
        items = [
            {
                "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for n in sorted(names)
        ]
        if route.name:
            return {"kind": "Namespace", "apiVersion": "v1", **items[0]}
        return {
            "kind": "NamespaceList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _review(self, body: Any) -> Obj:
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise _ApiError(400, "SelfSubjectAccessReview: spec is required")
        attrs = spec.get("resourceAttributes") or {}
        allowed = self._allowed(
            attrs.get("group", ""),
            attrs.get("resource", ""),
            attrs.get("subresource", ""),
            attrs.get("verb", ""),
            attrs.get("name", ""),
        )
        if spec.get("nonResourceAttributes") is not None and not attrs:
            allowed = self.rbac_rules is None
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": {"allowed": allowed},
        }

    def _get(self, kind: _Kind, namespace: str, name: str) -> Obj:
        obj = self._store[kind.resource].get((namespace, name))
        if obj is None:
            raise _not_found(kind, name)
        return _as_group(kind, obj)

    def _list(self, kind: _Kind, namespace: str | None, query: dict[str, str]) -> Obj:
        selector = _make_selector(kind.resource, query)
        store = self._store[kind.resource]
        keys = [k for k in sorted(store) if namespace in (None, k[0]) and selector.matches(store[k])]
        rv = str(self._rv)
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"]))
                rv, start = token["rv"], tuple(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _ApiError(
                    400, "continue key is not valid: incorrect encoded start resourceVersion"
                ) from exc
            keys = [k for k in keys if k > start]
        metadata: Obj = {"resourceVersion": rv}
        limit = _int_param(query, "limit")
        if 0 < limit < len(keys):
            token_json = json.dumps({"rv": rv, "start": list(keys[limit - 1])})
            metadata["continue"] = base64.urlsafe_b64encode(token_json.encode()).decode()
            metadata["remainingItemCount"] = len(keys) - limit
            keys = keys[:limit]
        items = []
        for key in keys:
            item = _as_group(kind, store[key])
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": items,
        }

    def _create(self, kind: _Kind, namespace: str, body: Any, dry_run: bool) -> Obj:
        obj = self._check_body(kind, body)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise _ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(meta["generateName"])
        name = meta.get("name") or ""
        if not name:
            raise _invalid(kind, "", [("metadata.name", "Required value: name or generateName is required")])
        for key in ("resourceVersion", "deletionTimestamp", "selfLink"):
            meta.pop(key, None)
        meta.update(namespace=namespace, uid=self._new_uid(), creationTimestamp=_now(), generation=1)
        _normalize(kind, obj)
        if kind.resource == "jobs":
            _default_job(obj)
        elif kind.resource == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        if self.validate and (errors := _validate(kind, obj)):
            raise _invalid(kind, name, errors)
        if (namespace, name) in self._store[kind.resource]:
            raise _ApiError(
                409,
                f'{kind.qualified_resource} "{name}" already exists',
                reason="AlreadyExists",
                details={"name": name, "group": kind.group, "kind": kind.resource},
            )
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self._rv)
            return obj
        stored = self._write(kind.resource, obj, None)
        result = copy.deepcopy(stored)
        self._collect_if_orphaned(kind.resource, stored)
        if kind.resource == "jobs" and self.job_controller:
            self._start_job(stored)
        return result

    def _patched(self, kind: _Kind, namespace: str, route: _Route, body: Any, content_type: str) -> Obj:
        """The object a PUT or PATCH asks for (before server-side checks)."""
        if route.verb == "update":
            return self._check_body(kind, body)
        current = self._get(kind, namespace, route.name or "")
        try:
            if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(body, dict):
                    raise ValueError("a merge patch must be a JSON object")
                patched: Obj = _merge_patch(current, body)
                return patched
            if content_type == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ValueError("a JSON patch must be a JSON array")
                return _json_patch(current, body)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _invalid(kind, route.name or "", [("patch", f"Invalid value: {exc}")]) from exc
        raise _ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json-patch+json, application/merge-patch+json, "
            f"application/strategic-merge-patch+json (got {content_type})",
        )

    def _update(self, kind: _Kind, namespace: str, route: _Route, new: Obj, dry_run: bool) -> Obj:
        name = route.name or ""
        old = self._store[kind.resource].get((namespace, name))
        if old is None:
            raise _not_found(kind, name)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name or meta.get("namespace", namespace) != namespace:
            raise _ApiError(400, "the name or namespace of the object does not match the request URL")
        if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise _conflict(
                kind,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if meta.get("uid") not in (None, "", old["metadata"]["uid"]):
            raise _conflict(
                kind,
                name,
                f"Precondition failed: UID in precondition: {old['metadata']['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        for key in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            meta[key] = old["metadata"][key]
        meta.update(name=name, namespace=namespace)
        _normalize(kind, new)
        if kind.status_subresource:
            if route.subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status") or {}}
            else:
                new["status"] = copy.deepcopy(old.get("status") or {})
        if self.validate and (errors := _immutable_errors(kind, old, new) + _validate(kind, new)):
            raise _invalid(kind, name, errors)
        if new == old:
            return copy.deepcopy(old)
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if dry_run:
            return new
        stored = self._write(kind.resource, new, old)
        result = copy.deepcopy(stored)
        self._collect_if_orphaned(kind.resource, stored)
        return result

    def _delete_response(
        self, kind: _Kind, namespace: str, name: str, query: dict[str, str], body: Any, dry_run: bool
    ) -> web.Response:
        obj = self._get(kind, namespace, name)
        options = body if isinstance(body, dict) else {}
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) not in (None, obj["metadata"][key]):
                raise _conflict(
                    kind,
                    name,
                    f"Precondition failed: {key} in precondition: {preconditions[key]}, "
                    f"{key} in object meta: {obj['metadata'][key]}",
                )
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        headers = {}
        if policy is None and kind.resource == "jobs":
            policy = "Orphan"
            headers["Warning"] = _JOB_ORPHAN_WARNING
        if policy not in ("Orphan", "Background", "Foreground", None):
            raise _ApiError(
                422,
                f'Unsupported value: "{policy}": supported values: "Orphan", "Background", "Foreground"',
                reason="Invalid",
            )
        if not (dry_run or "All" in (options.get("dryRun") or [])):
            self._delete_tree(kind.resource, (namespace, name), policy or "Background")
        return web.json_response(obj, headers=headers)

    def _delete_collection(
        self, kind: _Kind, namespace: str, query: dict[str, str], body: Any, dry_run: bool
    ) -> Obj:
        listing = self._list(kind, namespace, {k: v for k, v in query.items() if k != "limit"})
        options = body if isinstance(body, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None:
            policy = "Orphan" if kind.resource == "jobs" else "Background"
        if not dry_run:
            for item in listing["items"]:
                self._delete_tree(kind.resource, (namespace, item["metadata"]["name"]), policy)
        return listing

    async def _watch(
        self,
        request: web.Request,
        kind: _Kind,
        namespace: str | None,
        query: dict[str, str],
        record: RecordedRequest,
    ) -> web.StreamResponse:
        selector = _make_selector(kind.resource, query)
        watcher = _Watcher(kind, namespace, selector, _parse_bool(query.get("allowWatchBookmarks")))
        initial, gone = self._watch_backlog(kind, watcher, query.get("resourceVersion", ""))
        timeout = float(_int_param(query, "timeoutSeconds")) if query.get("timeoutSeconds") else None
        self._watchers.append(watcher)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        record.status = 200
        try:
            await response.prepare(request)
            for rule in self._watch_lines:
                if rule[0] > 0 and rule[2] in (None, kind.resource):
                    rule[0] -= 1
                    self._watch_lines = [r for r in self._watch_lines if r[0] > 0]
                    await response.write(rule[1])
                    break
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            if not gone and watcher.bookmarks:
                await response.write(json.dumps(self._bookmark(kind)).encode() + b"\n")
            if not gone:
                await self._pump(response, watcher, timeout)
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self._watchers.remove(watcher)
        return response

    def _watch_backlog(self, kind: _Kind, watcher: _Watcher, rv_param: str) -> tuple[list[Obj], bool]:
        """Events to send before live ones, and whether the requested resourceVersion is gone."""
        if rv_param in ("", "0"):
            store = self._store[kind.resource]
            return [
                {"type": "ADDED", "object": _as_group(kind, store[k])}
                for k in sorted(store)
                if watcher.namespace in (None, k[0]) and watcher.selector.matches(store[k])
            ], False
        try:
            since = int(rv_param)
        except ValueError as exc:
            raise _ApiError(400, f"invalid resource version: {rv_param}") from exc
        if since < self._history_floor:
            status = _status_body(
                410, "Expired", f"too old resource version: {since} ({self._history_floor + 1})"
            )
            return [{"type": "ERROR", "object": status}], True
        events = [watcher.event_for(c) for c in self._history if c.rv > since]
        return [e for e in events if e is not None], False

    async def _pump(self, response: web.StreamResponse, watcher: _Watcher, seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                change = await asyncio.wait_for(watcher.queue.get(), remaining)
            except TimeoutError:
                return
            if change is None:
                return
            event = change if isinstance(change, dict) else watcher.event_for(change)
            if event is not None:
                await response.write(json.dumps(event).encode() + b"\n")

    def _bookmark(self, kind: _Kind) -> Obj:
        obj = {
            "kind": kind.kind,
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
        }
        return {"type": "BOOKMARK", "object": obj}

    # ----------------------------------------------------------------------------------- store primitives

    def _kind(self, resource: str) -> _Kind:
        if resource not in _KINDS:
            raise ValueError(f"unknown resource {resource!r}; expected one of {sorted(_KINDS)}")
        return _KINDS[resource]

    def _existing(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self._store[resource].get((namespace, name))
        if obj is None:
            raise LookupError(f"{resource} {namespace}/{name} does not exist")
        return copy.deepcopy(obj)

    def _check_body(self, kind: _Kind, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise _ApiError(400, f"the body of the request must be a {kind.kind} object")
        if body.get("kind") not in (None, kind.kind) or body.get("apiVersion") not in (
            None,
            kind.api_version,
        ):
            raise _ApiError(
                400,
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({kind.api_version}) or kind ({body.get('kind')})",
            )
        return copy.deepcopy(body)

    def _new_uid(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _generate_name(self, prefix: str) -> str:
        return prefix[:58] + "".join(self._id_rng.choice(_NAME_CHARS) for _ in range(5))

    def _write(self, resource: str, obj: Obj, old: Obj | None) -> Obj:
        """Store ``obj`` with a new resourceVersion and fire ADDED/MODIFIED."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self._store[resource][(meta["namespace"], meta["name"])] = obj
        self._emit(resource, "MODIFIED" if old is not None else "ADDED", obj, old)
        return obj

    def _remove(self, resource: str, key: tuple[str, str]) -> Obj | None:
        obj = self._store[resource].pop(key, None)
        if obj is not None:
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._emit(resource, "DELETED", obj, obj)
        return obj

    def _emit(self, resource: str, event_type: str, obj: Obj, old: Obj | None) -> None:
        change = _Change(
            self._rv,
            resource,
            obj["metadata"]["namespace"],
            event_type,
            copy.deepcopy(obj),
            copy.deepcopy(old),
        )
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        self._history.append(change)
        for watcher in self._watchers:
            watcher.queue.put_nowait(change)

    def _dependents(self, owner_uid: str, namespace: str) -> list[tuple[str, tuple[str, str], Obj]]:
        return [
            (resource, key, obj)
            for resource, store in self._store.items()
            for key, obj in sorted(store.items())
            if key[0] == namespace
            and any(r.get("uid") == owner_uid for r in obj["metadata"].get("ownerReferences") or [])
        ]

    def _uid_exists(self, namespace: str, uid: str) -> bool:
        return any(
            k[0] == namespace and o["metadata"]["uid"] == uid
            for s in self._store.values()
            for k, o in s.items()
        )

    def _delete_tree(self, resource: str, key: tuple[str, str], policy: str) -> None:
        """Delete an object and garbage-collect its dependents according to ``policy``."""
        obj = self._store[resource].get(key)
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        if policy == "Foreground":
            self._collect_dependents(uid, key[0], policy)
        self._remove(resource, key)
        if policy != "Foreground":
            self._collect_dependents(uid, key[0], policy)

    def _collect_dependents(self, owner_uid: str, namespace: str, policy: str) -> None:
        for resource, key, dependent in self._dependents(owner_uid, namespace):
            refs = dependent["metadata"]["ownerReferences"]
            others = [r for r in refs if r.get("uid") != owner_uid]
            if policy == "Orphan" or any(self._uid_exists(namespace, r.get("uid", "")) for r in others):
                stripped = copy.deepcopy(dependent)
                stripped["metadata"]["ownerReferences"] = others
                if not others:
                    del stripped["metadata"]["ownerReferences"]
                self._write(resource, stripped, dependent)
            else:
                self._delete_tree(resource, key, "Foreground" if policy == "Foreground" else "Background")

    def _collect_if_orphaned(self, resource: str, obj: Obj) -> None:
        """Like the real garbage collector: an object whose owners all do not exist is deleted."""
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if refs and not any(self._uid_exists(meta["namespace"], r.get("uid", "")) for r in refs):
            self._delete_tree(resource, (meta["namespace"], meta["name"]), "Background")


# --------------------------------------------------------------------------------------------- routing


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _ApiError(400, f"the body of the request could not be decoded: {exc}") from exc


def _parse_route(method: str, path: str, query: dict[str, str]) -> _Route:
    """Map an HTTP request onto a Kubernetes verb and resource."""
    parts = [p for p in path.split("/") if p]
    not_found = _ApiError(404, "the server could not find the requested resource")
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise not_found
    if (group, rest) == ("", ["namespaces"]) or (group == "" and len(rest) == 2 and rest[0] == "namespaces"):
        if method != "GET":
            raise _ApiError(
                405, f"the server does not allow this method on the requested resource ({method})"
            )
        return _Route(
            "get" if len(rest) == 2 else "list", "namespaces", None, None, rest[1] if len(rest) == 2 else None
        )
    if (group, version, rest, method) == ("authorization.k8s.io", "v1", ["selfsubjectaccessreviews"], "POST"):
        return _Route("create", "selfsubjectaccessreviews", None, None, None)
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in _GROUP_RESOURCES.get((group, version), frozenset()) or len(rest) > 3:
        raise not_found
    if len(rest) == 3 and rest[2] != "status":
        raise not_found
    kind = _KINDS[rest[0]]
    if group != kind.group:  # events.k8s.io/v1 events share the core store
        kind = _Kind(kind.resource, group, version, kind.kind, kind.status_subresource)
    verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    if len(rest) == 1:
        watch = _parse_bool(query.get("watch"))
        verbs = {"GET": "watch" if watch else "list", "POST": "create", "DELETE": "deletecollection"}
        if namespace is None:
            verbs = {"GET": verbs["GET"]}
    verb = verbs.get(method)
    if verb is None:
        raise _ApiError(405, f"the server does not allow this method on the requested resource ({method})")
    name = rest[1] if len(rest) >= 2 else None
    return _Route(verb, kind.resource, kind, namespace, name, rest[2] if len(rest) == 3 else None)


def _discovery(path: str) -> Obj | None:
    if path == "/version":
        return {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kube-emulator", "platform": "linux/amd64"}
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }
    if path == "/apis":
        groups = [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
            }
            for g, v in [*_GROUP_RESOURCES, ("authorization.k8s.io", "v1")]
            if g
        ]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    for (group, version), resources in _GROUP_RESOURCES.items():
        if path.rstrip("/") == (f"/apis/{group}/{version}" if group else "/api/v1"):
            listed = [
                {
                    "name": r,
                    "singularName": _KINDS[r].kind.lower(),
                    "namespaced": True,
                    "kind": _KINDS[r].kind,
                    "verbs": [
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                }
                for r in sorted(resources)
            ]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}".lstrip("/"),
                "resources": listed,
            }
    return None
