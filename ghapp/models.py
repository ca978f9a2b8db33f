"""Typed value objects, and parsing them from webhook payloads (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ghapp.clock import timestamp_or_none
from ghapp.errors import InvalidPayload

OwnerType = Literal["Organization", "User"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Repository:
    """The repository a workflow job runs for."""

    id: int
    full_name: str
    owner: str
    owner_type: OwnerType
    private: bool
    visibility: str

    @property
    def name(self) -> str:
        return self.full_name.split("/", 1)[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowJob:
    """The parts of a ``workflow_job`` webhook payload that ghapp acts on."""

    action: str
    id: int
    run_id: int
    run_attempt: int
    name: str
    workflow_name: str | None
    labels: tuple[str, ...]
    status: str
    conclusion: str | None
    runner_id: int | None
    runner_name: str | None
    repository: Repository
    installation_id: int
    created_at: float | None = None
    """When the job was queued (GitHub's ``created_at``), epoch seconds."""
    started_at: float | None = None
    """When a runner took it (``started_at``; meaningful from ``in_progress`` on)."""
    completed_at: float | None = None
    """When it completed (``completed_at``; only in ``completed``)."""

    @property
    def account(self) -> str:
        """The organisation or user the job's repository belongs to."""
        return self.repository.owner

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> WorkflowJob:
        """Parse a ``workflow_job`` payload; raise `InvalidPayload` naming the missing or bad field."""
        job = _mapping(payload, "workflow_job")
        repo = _mapping(payload, "repository")
        owner = _mapping(repo, "owner", where="repository")
        installation = payload.get("installation")
        if not isinstance(installation, Mapping) or not isinstance(installation.get("id"), int):
            raise InvalidPayload("installation.id is missing: the delivery did not come through the App")
        owner_type = owner.get("type")
        if owner_type not in ("Organization", "User"):
            raise InvalidPayload("repository.owner.type must be 'Organization' or 'User'")
        labels = job.get("labels")
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise InvalidPayload("workflow_job.labels must be a list of strings")
        private = repo.get("private")
        return cls(
            action=_typed(payload, "action", str),
            id=_typed(job, "id", int, where="workflow_job"),
            run_id=_typed(job, "run_id", int, where="workflow_job"),
            run_attempt=_optional(job, "run_attempt", int) or 1,
            name=_optional(job, "name", str) or "",
            workflow_name=_optional(job, "workflow_name", str),
            labels=tuple(labels),
            status=_optional(job, "status", str) or "",
            conclusion=_optional(job, "conclusion", str),
            runner_id=_optional(job, "runner_id", int),
            runner_name=_optional(job, "runner_name", str),
            repository=Repository(
                id=_typed(repo, "id", int, where="repository"),
                full_name=_typed(repo, "full_name", str, where="repository"),
                owner=_typed(owner, "login", str, where="repository.owner"),
                owner_type=owner_type,
                private=bool(private) if isinstance(private, bool) else True,
                visibility=_optional(repo, "visibility", str) or ("private" if private else "public"),
            ),
            installation_id=installation["id"],
            created_at=timestamp_or_none(job.get("created_at")),
            started_at=timestamp_or_none(job.get("started_at")),
            completed_at=timestamp_or_none(job.get("completed_at")),
        )


def _mapping(data: Mapping[str, Any], key: str, *, where: str = "") -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise InvalidPayload(f"{_path(where, key)} is missing or not an object")
    return value


def _typed(data: Mapping[str, Any], key: str, kind: type[T], *, where: str = "") -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidPayload(f"{_path(where, key)} is missing or not of type {kind.__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    return value if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool) else None


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
