"""The settings object: environment (``GHAPP_*``) plus the pools file, validated once at start.

This is the only module that reads the environment. Every error names the setting it is about and never
repeats a secret value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ghapp.errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
APP_ID = re.compile(r"^(?:[1-9][0-9]{0,19}|Iv[0-9A-Za-z.]{1,40})$")
"""A GitHub App's numeric id or its client id (``Iv1.…``, ``Iv23li…``)."""
ACCOUNT_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_POOLS_FILE = Path(__file__).with_name("data") / "pools.yaml"
RunnerMode = Literal["registration-token", "jit"]
MAX_POOL_NAME = 30
"""Pool names end up in label values and object names; 30 leaves room for prefixes and job ids."""


def _dns_label(value: str, *, what: str, max_length: int = 63) -> str:
    if len(value) > max_length or not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} must be a DNS label: lowercase letters, digits and '-', at most {max_length} characters"
        )
    return value


WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names of a warm schedule window, Monday first (``datetime.weekday()`` order)."""
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?/[A-Za-z0-9._-]+$")
DEFAULT_RECYCLE_SECONDS = 3600
"""A warm runner idle this long is replaced (registration tokens live an hour)."""


def minutes_of(clock_time: str) -> int:
    """``HH:MM`` (``24:00`` allowed) to minutes since midnight."""
    hours, _, minutes = clock_time.partition(":")
    return int(hours) * 60 + int(minutes)


class WarmWindow(BaseModel):
    """A time window of a warm entry: on these days, from `start` to `end` local time, keep `min_idle`.

    A window whose `end` is not after its `start` crosses midnight: it starts on the listed days and ends
    on the next day. Times are wall-clock times in `timezone`, so the window follows daylight saving time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: tuple[Weekday, ...]
    """Days of the week the window starts on (``mon`` … ``sun``)."""
    start: str
    """Local start time, ``HH:MM`` (24-hour clock)."""
    end: str
    """Local end time, ``HH:MM`` or ``24:00``; not after `start`: the window ends the next day."""
    timezone: str
    """An IANA time zone name, e.g. ``Europe/Berlin`` or ``UTC``."""
    min_idle: int = Field(ge=0, le=10_000)
    """Idle runners to keep while the window is open."""

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("days must list at least one day (mon, tue, wed, thu, fri, sat, sun)")
        if len(set(value)) != len(value):
            raise ValueError("days lists a day twice")
        return value

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        if not CLOCK_TIME.match(value):
            raise ValueError("start must be a time HH:MM from 00:00 to 23:59")
        return value

    @field_validator("end")
    @classmethod
    def _end(cls, value: str) -> str:
        if value != "24:00" and not CLOCK_TIME.match(value):
            raise ValueError("end must be a time HH:MM from 00:00 to 24:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {value!r} is not an IANA time zone (e.g. UTC)") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> WarmWindow:
        if minutes_of(self.start) == minutes_of(self.end):
            raise ValueError("start and end are the same time; a window must have a length")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class WarmEntry(BaseModel):
    """Keep `min_idle` idle runners of the pool ready for one organisation or one repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    organization: str | None = None
    """Keep organisation runners for this organisation (an installation of the App must be on it)."""
    repository: str | None = None
    """Or: keep repository runners for this repository (``owner/name``)."""
    min_idle: int = Field(default=0, ge=0, le=10_000)
    """Idle runners to keep outside every window of `schedule` (0: none)."""
    schedule: tuple[WarmWindow, ...] = ()
    """Windows with their own ``min_idle``; where windows overlap the largest applies."""

    @field_validator("organization")
    @classmethod
    def _organization(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT_LOGIN.match(value):
            raise ValueError("organization must be a GitHub login (letters, digits, '-')")
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not REPOSITORY_NAME.match(value):
            raise ValueError("repository must be owner/name")
        return value

    @model_validator(mode="after")
    def _one_scope(self) -> WarmEntry:
        if (self.organization is None) == (self.repository is None):
            raise ValueError("name exactly one of organization or repository")
        return self

    @property
    def account(self) -> str:
        """The account the App's installation must be on."""
        return self.organization or str(self.repository).split("/", 1)[0]

    @property
    def scope_key(self) -> str:
        """The runner scope, as `ghapp.planner.RunnerScope.key` writes it."""
        return f"org:{self.organization}" if self.organization else f"repo:{self.repository}"

    @property
    def peak(self) -> int:
        """The most idle runners this entry ever asks for."""
        return max([self.min_idle, *(window.min_idle for window in self.schedule)])


class Pool(BaseModel):
    """One kind of runner: the labels it registers with, how many may run, and what it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Name of the pool (a DNS label of at most 30 characters); appears in labels and metrics."""
    labels: tuple[str, ...]
    """The runner registers with exactly these labels; a job matches when all its labels are among them."""
    max_runners: int = Field(default=10, ge=1, le=10_000)
    """Most runners of this pool that may exist at once."""
    image: str = "ghcr.io/actions/actions-runner:latest"
    """Runner image; the official image has no entrypoint, ghapp sets the command."""
    mode: RunnerMode = "registration-token"
    """How runners register: ``registration-token`` (``config.sh`` with a shared, cached token) or ``jit``
    (one just-in-time config per runner from ``generate-jitconfig``; the runner only runs ``run.sh``)."""
    runner_group: str | None = None
    """Runner group by name (organisation runners only); default: the organisation's default group.
    Repository runners always join the default group."""
    namespace: str | None = None
    """Namespace of this pool's Jobs and Secrets; default: GHAPP_NAMESPACE."""
    ttl_seconds_after_finished: int = Field(default=300, ge=0)
    """How long a finished runner Job stays for inspection before Kubernetes deletes it."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Longest a runner Job may run before Kubernetes stops it; default: no limit."""
    unschedulable_seconds: float = Field(default=300.0, ge=0)
    """How long a runner pod may wait for a node before it counts as failed (``unschedulable``)."""
    service_account: str | None = None
    """A dedicated ServiceAccount for this pool's runner pods (verified at startup and by ``ghapp check``);
    default: GHAPP_RUNNER_SERVICE_ACCOUNT, else the namespace's ``default`` account (no token mounted)."""
    env: tuple[dict[str, Any], ...] = ()
    """Extra environment variables (Kubernetes ``EnvVar`` objects) for the runner container."""
    template: dict[str, Any] | None = None
    """A Kubernetes ``PodTemplateSpec`` that ghapp merges its runner container into (see the README)."""
    repositories: tuple[str, ...] = ()
    """Only jobs of repositories matching one of these globs (``owner/name``, any case); empty: any."""
    organizations: tuple[str, ...] = ()
    """Only jobs of repositories whose owner matches one of these globs (case-insensitive); empty: any."""
    allow_public: bool = False
    """Whether jobs of public repositories may get a runner from this pool."""
    allow_forks: bool = False
    """Whether, in public repositories, runs triggered from a fork (pull requests) may get a runner."""
    warm: tuple[WarmEntry, ...] = ()
    """Idle runners kept ready per organisation or repository, optionally by schedule (see the README)."""
    warm_recycle_seconds: int = Field(default=DEFAULT_RECYCLE_SECONDS, ge=60)
    """A warm runner idle longer than this is replaced by a fresh one."""

    @field_validator("namespace")
    @classmethod
    def _namespace_is_dns_label(cls, value: str | None) -> str | None:
        return None if value is None else _dns_label(value, what="namespace")

    @field_validator("service_account")
    @classmethod
    def _service_account_name(cls, value: str | None) -> str | None:
        return None if value is None else _dns_label(value, what="service_account", max_length=253)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for index, item in enumerate(value):
            _check_env_item(item, where=f"env[{index}]")
        return value

    @field_validator("template")
    @classmethod
    def _template_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_template(value)
        return value

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, value: str) -> str:
        return _dns_label(value, what="name", max_length=MAX_POOL_NAME)

    @field_validator("labels")
    @classmethod
    def _labels_are_sane(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("labels must list at least one label")
        if len(value) > 100:
            raise ValueError("labels may list at most 100 labels (GitHub's limit)")
        for label in value:
            if not label or label != label.strip() or "," in label:
                raise ValueError(f"label {label!r} must be non-empty, without commas or surrounding spaces")
        return value

    @model_validator(mode="after")
    def _warm_fits(self) -> Pool:
        seen: set[str] = set()
        for index, entry in enumerate(self.warm):
            where = f"warm[{index}]"
            key = entry.scope_key.lower()
            if key in seen:
                raise ValueError(f"{where}: {entry.scope_key} is named twice")
            seen.add(key)
            if entry.peak > self.max_runners:
                raise ValueError(f"{where}.min_idle: {entry.peak} idle runners exceed max_runners")
            if self.organizations and not glob_match(entry.account, self.organizations):
                raise ValueError(f"{where}: {entry.account} is outside the pool's organizations")
            if self.repositories and (
                entry.repository is None or not glob_match(entry.repository, self.repositories)
            ):
                raise ValueError(f"{where}: {entry.scope_key} is outside the pool's repositories")
        if sum(entry.peak for entry in self.warm) > self.max_runners:
            raise ValueError("warm: the entries' min_idle together exceed max_runners")
        return self

    @property
    def label_set(self) -> frozenset[str]:
        """The pool's labels, lower-cased, for matching."""
        return frozenset(label.lower() for label in self.labels)


def glob_match(name: str, globs: Sequence[str]) -> bool:
    """Whether `name` matches one of `globs` (fnmatch), case-insensitively."""
    return any(fnmatchcase(name.lower(), glob.lower()) for glob in globs)


RUNNER_CONTAINER = "runner"
"""The container of a pool template that ghapp wires up as the runner."""
DEFAULT_SERVICE_ACCOUNT = "default"
"""The ServiceAccount every namespace has (its controller makes it): runner pods use it unless told."""
RESERVED_ENV_PREFIX = "ACTIONS_RUNNER_INPUT_"
"""Runner options ghapp sets itself; templates and pools may not set them."""


def _check_env_item(item: Any, *, where: str) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(f"{where} must be an EnvVar object with a name")
    if item["name"].upper().startswith(RESERVED_ENV_PREFIX):
        raise ValueError(f"{where}: {RESERVED_ENV_PREFIX}* variables are set by ghapp")


def _check_template(template: dict[str, Any]) -> None:
    """The parts of a PodTemplateSpec that ghapp merges into must have the right shape (the rest is
    checked against the Kubernetes schema once rendered)."""
    for key in ("metadata", "spec"):
        if not isinstance(template.get(key, {}), dict):
            raise ValueError(f"template.{key} must be an object")
    metadata = template.get("metadata", {})
    for key in ("labels", "annotations"):
        if not isinstance(metadata.get(key, {}), dict):
            raise ValueError(f"template.metadata.{key} must be an object")
    spec = template.get("spec", {})
    if spec.get("restartPolicy", "Never") != "Never":
        raise ValueError("template.spec.restartPolicy: runner pods never restart; leave it out or use Never")
    if not isinstance(spec.get("securityContext", {}), dict):
        raise ValueError("template.spec.securityContext must be an object")
    for list_key in ("containers", "initContainers"):
        containers = spec.get(list_key, [])
        if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
            raise ValueError(f"template.spec.{list_key} must be a list of Container objects")
        for index, container in enumerate(containers):
            where = f"template.spec.{list_key}[{index}]"
            if not isinstance(container.get("securityContext", {}), dict):
                raise ValueError(f"{where}.securityContext must be an object")
            if list_key != "containers" or container.get("name") != RUNNER_CONTAINER:
                continue
            for owned in ("command", "args"):
                if owned in container:
                    raise ValueError(f"{where}.{owned} is set by ghapp; leave it out")
            env = container.get("env", [])
            if not isinstance(env, list):
                raise ValueError(f"{where}.env must be a list of EnvVar objects")
            for position, item in enumerate(env):
                _check_env_item(item, where=f"{where}.env[{position}]")


class PoolsFile(BaseModel):
    """The shape of ``GHAPP_POOLS_FILE``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: tuple[Pool, ...]

    @field_validator("pools")
    @classmethod
    def _names_unique(cls, value: tuple[Pool, ...]) -> tuple[Pool, ...]:
        if not value:
            raise ValueError("at least one pool is needed")
        names = [pool.name for pool in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicates)}")
        return value


LogFormat = Literal["auto", "text", "json"]


class Settings(BaseModel):
    """Everything ghapp is configured with. Built by `load_settings`; immutable afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str | None = None
    """GHAPP_APP_ID: the App's id (or client id); the JWT's ``iss``."""
    private_key: SecretStr | None = None
    """GHAPP_PRIVATE_KEY / GHAPP_PRIVATE_KEY_FILE: the App's PEM private key."""
    webhook_secret: SecretStr | None = None
    """GHAPP_WEBHOOK_SECRET / GHAPP_WEBHOOK_SECRET_FILE: the secret webhooks are signed with."""
    github_api_url: str = "https://api.github.com"
    """GHAPP_GITHUB_API_URL: REST API root; ``https://HOST/api/v3`` for GitHub Enterprise Server."""
    namespace: str = "default"
    """GHAPP_NAMESPACE: where runner Jobs and Secrets are created."""
    pools_file: Path = DEFAULT_POOLS_FILE
    """GHAPP_POOLS_FILE: YAML file of runner pools (default: the bundled sample)."""
    pools: tuple[Pool, ...] = ()
    """The pools read from ``pools_file``, in file order."""
    host: str = "0.0.0.0"
    """GHAPP_HOST: listen address."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """GHAPP_PORT: the public listen port: ``POST /webhook`` and the probes only."""
    admin_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    """GHAPP_ADMIN_PORT: the admin listen port: ``/metrics``, ``/status`` and ``/status.json``."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    """GHAPP_MAX_BODY_BYTES: larger webhook bodies are refused with 413 (GitHub's own cap is 25 MB)."""
    runner_prefix: str = "ghapp"
    """GHAPP_RUNNER_PREFIX: start of every runner, Job and Secret name (a DNS label, ≤ 20 characters)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """GHAPP_LOG_LEVEL: least severity logged."""
    log_format: LogFormat = "auto"
    """GHAPP_LOG_FORMAT: ``json`` lines, human ``text``, or ``auto`` (text on a terminal, else JSON)."""
    launch_concurrency: Annotated[int, Field(ge=1, le=1000)] = 32
    """GHAPP_LAUNCH_CONCURRENCY: most runner launches talking to GitHub and Kubernetes at once (a launch
    makes its requests one after another, so this is also about how many are in flight)."""
    max_runners: Annotated[int, Field(ge=1)] | None = None
    """GHAPP_MAX_RUNNERS: most runners of all pools together (default: only the pools' own limits)."""
    installation_weights: dict[int, Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=dict)
    """GHAPP_INSTALLATION_WEIGHTS: ``ID=WEIGHT,…``; weight w gets w jobs per round-robin turn."""
    reconcile_interval_seconds: Annotated[float, Field(ge=1)] = 60.0
    """GHAPP_RECONCILE_INTERVAL_SECONDS: pause between two reconcile passes of the leader."""
    reconcile_timeout_seconds: Annotated[float, Field(ge=10)] = 600.0
    """GHAPP_RECONCILE_TIMEOUT_SECONDS: a reconcile pass still running after this long is cut off (a
    Kubernetes or GitHub call that hangs); the next pass runs as planned."""
    redelivery_lookback_seconds: Annotated[float, Field(ge=60, le=3 * 86400)] = 6 * 3600.0
    """GHAPP_REDELIVERY_LOOKBACK_SECONDS: how far back a first pass looks for failed deliveries."""
    reconcile_rate_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    """GHAPP_RECONCILE_RATE_SHARE: most of an installation's rate limit the queued-job scan may spend (that
    share of each window's limit, and of what remains when a pass starts)."""
    scan_concurrency: Annotated[int, Field(ge=1, le=50)] = 1
    """GHAPP_SCAN_CONCURRENCY: most repositories the queued-job scan lists at once, over all installations.
    GitHub asks integrators to make requests one after another (its secondary limits: 900 points a minute per
    endpoint, 100 requests at once); more shortens the passes of very large organisations."""
    github_cache_entries: Annotated[int, Field(ge=0)] = 20_000
    """GHAPP_GITHUB_CACHE_ENTRIES: GitHub answers kept for conditional requests (ETag; a 304 answer costs no
    rate limit); 0: none."""
    activity_ttl_seconds: Annotated[float, Field(ge=60)] = 24 * 3600.0
    """GHAPP_ACTIVITY_TTL_SECONDS: how long a repository is scanned after ghapp last planned a runner for
    one of its jobs."""
    idle_grace_seconds: Annotated[float, Field(ge=0)] = 300.0
    """GHAPP_IDLE_GRACE_SECONDS: a runner this young is never removed as idle surplus."""
    runner_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """GHAPP_RUNNER_ATTEMPTS: most runners started for one workflow job whose runners fail; then ghapp gives
    up on it (logged as an error, with why)."""
    registration_timeout_seconds: Annotated[float, Field(ge=30)] = 900.0
    """GHAPP_REGISTRATION_TIMEOUT_SECONDS: a runner Job whose runner has not registered by then is deleted."""
    orphan_grace_seconds: Annotated[float, Field(ge=0)] = 60.0
    """GHAPP_ORPHAN_GRACE_SECONDS: a runner Secret, Job or offline runner younger than this is never deleted
    as an orphan (its counterpart may be being made by another replica, or a view of it may lag)."""
    lease_name: str = "ghapp-reconciler"
    """GHAPP_LEASE_NAME: the Lease that elects the replica running the reconciler."""
    lease_namespace: str | None = None
    """GHAPP_LEASE_NAMESPACE: the namespace of that Lease (default: GHAPP_NAMESPACE); see `lease_ns`."""
    lease_duration_seconds: Annotated[float, Field(ge=1)] = 15.0
    """GHAPP_LEASE_DURATION_SECONDS: how long a leader's lease lasts without renewal."""
    identity: str = "ghapp"
    """POD_NAME or HOSTNAME: this replica's name in the Lease."""
    kubeconfig: str | None = None
    """KUBECONFIG: kubeconfig file(s); else ~/.kube/config if present, else the in-cluster service account."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 20.0
    """GHAPP_SHUTDOWN_GRACE_SECONDS: how long in-flight launches may finish after SIGTERM."""
    watch_broken_limit_seconds: Annotated[float, Field(ge=10)] = 300.0
    """GHAPP_WATCH_BROKEN_LIMIT_SECONDS: ``/healthz`` fails once the watch of runner Jobs has been failing
    for this long without a working stream in between (the kubelet then restarts ghapp)."""
    allowed_accounts: tuple[str, ...] = ()
    """GHAPP_ALLOWED_ACCOUNTS: comma-separated org / user logins whose installations may get runners
    (case-insensitive); empty: only the App's owner; ``*``: any account."""
    recent_jobs: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    """GHAPP_RECENT_JOBS: how many recent workflow jobs' timelines are kept in memory (oldest dropped)."""
    usage_by_repository: bool = False
    """GHAPP_USAGE_BY_REPOSITORY: also count runner seconds per repository (one metric series each)."""
    runner_service_account: str | None = None
    """GHAPP_RUNNER_SERVICE_ACCOUNT: a dedicated ServiceAccount for runner pods (it should have no
    permissions; verified at startup and by ``ghapp check``); default: each namespace's ``default``
    account, with no token mounted."""

    @field_validator("allowed_accounts", mode="before")
    @classmethod
    def _split_accounts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_accounts")
    @classmethod
    def _accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for login in value:
            if login != "*" and not ACCOUNT_LOGIN.match(login):
                raise ValueError("must be '*' or comma-separated GitHub logins (letters, digits, '-')")
        return value

    @field_validator("app_id", mode="before")
    @classmethod
    def _app_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not APP_ID.match(value):
            raise ValueError(
                "must be the App's numeric id (its settings page, 'App ID') or its client id (Iv…); "
                "it is neither"
            )
        return value

    @field_validator("runner_service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        return None if value is None else _dns_label(value, what="runner service account", max_length=253)

    @field_validator("github_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://api.github.com or https://HOST/api/v3")
        return value.rstrip("/")

    @field_validator("installation_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        weights: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            installation, sep, weight = item.partition("=")
            if not sep:
                raise ValueError("must look like INSTALLATION_ID=WEIGHT,INSTALLATION_ID=WEIGHT")
            weights[installation.strip()] = weight.strip()
        return weights

    @field_validator("lease_name")
    @classmethod
    def _lease_name(cls, value: str) -> str:
        return _dns_label(value, what="lease name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _dns_label(value, what="namespace")

    @field_validator("lease_namespace")
    @classmethod
    def _lease_namespace(cls, value: str | None) -> str | None:
        return None if value is None else _dns_label(value, what="namespace")

    @field_validator("runner_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _dns_label(value, what="runner prefix", max_length=20)

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            if "PUBLIC KEY-----" in text:
                raise ValueError(
                    "is a public key; ghapp needs the App's private key (the .pem file GitHub downloads "
                    "when you generate a private key in the App's settings)"
                ) from None
            raise ValueError("is not a PEM-encoded, unencrypted private key") from None
        if not isinstance(key, RSAPrivateKey):
            kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "other"
            raise ValueError(
                f"is an {kind} key; a GitHub App's private key is an RSA key "
                "(generate one in the App's settings)"
            )
        return value

    @model_validator(mode="after")
    def _has_pools(self) -> Settings:
        if not self.pools:
            raise ValueError("no pools configured")
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.admin_port == self.port:
            raise ValueError(
                f"GHAPP_ADMIN_PORT and GHAPP_PORT are both {self.port}: the admin port must be another one"
            )
        return self

    def pool(self, name: str) -> Pool | None:
        """The pool called `name`, or None."""
        return next((pool for pool in self.pools if pool.name == name), None)

    @property
    def runner_namespaces(self) -> tuple[str, ...]:
        """Every namespace runner Jobs may live in: GHAPP_NAMESPACE and the pools' own."""
        return tuple(sorted({self.namespace, *(pool.namespace for pool in self.pools if pool.namespace)}))

    @property
    def lease_ns(self) -> str:
        """The namespace of the reconciler's Lease: GHAPP_LEASE_NAMESPACE, else GHAPP_NAMESPACE."""
        return self.lease_namespace or self.namespace

    @property
    def web_url(self) -> str:
        """The GitHub web root that runners register against (github.com, or the GHES host)."""
        parts = urlsplit(self.github_api_url)
        if parts.netloc == "api.github.com":
            return "https://github.com"
        if parts.netloc.startswith("api.") and parts.netloc.endswith(".ghe.com"):
            return f"{parts.scheme}://{parts.netloc.removeprefix('api.')}"
        path = parts.path.removesuffix("/api/v3")
        return f"{parts.scheme}://{parts.netloc}{path}"

    @property
    def account_rule(self) -> str:
        """GHAPP_ALLOWED_ACCOUNTS in words."""
        if "*" in self.allowed_accounts:
            return "any account"
        if self.allowed_accounts:
            return "accounts " + ", ".join(self.allowed_accounts)
        return "only the App's owner"

    @property
    def uses_sample_pools(self) -> bool:
        """Whether the pools come from the sample bundled with ghapp (GHAPP_POOLS_FILE not set)."""
        return self.pools_file.resolve() == DEFAULT_POOLS_FILE.resolve()

    def summary(self) -> dict[str, Any]:
        """What this ghapp is configured to do, for the startup line (no secrets)."""
        return {
            "listen": f"http://{self.host}:{self.port} (webhook, probes)",
            "admin": f"http://{self.host}:{self.admin_port} (metrics, status)",
            "pools_file": str(self.pools_file),
            "pools": [pool.name for pool in self.pools],
            "github": self.github_api_url,
            "app_id": self.app_id,
            "namespaces": list(self.runner_namespaces),
            "accounts": self.account_rule,
        }

    def require_credentials(self) -> None:
        """Raise `ConfigError` naming every credential setting the server needs and lacks."""
        missing = [
            name
            for name, value in (
                ("GHAPP_APP_ID", self.app_id),
                ("GHAPP_PRIVATE_KEY or GHAPP_PRIVATE_KEY_FILE", self.private_key),
                ("GHAPP_WEBHOOK_SECRET or GHAPP_WEBHOOK_SECRET_FILE", self.webhook_secret),
            )
            if not value
        ]
        if missing:
            raise ConfigError("missing required settings: " + "; ".join(missing))


# Environment variable → settings field. Secrets have a *_FILE twin.
_ENV_FIELDS: Mapping[str, str] = {
    "GHAPP_APP_ID": "app_id",
    "GHAPP_GITHUB_API_URL": "github_api_url",
    "GHAPP_NAMESPACE": "namespace",
    "GHAPP_POOLS_FILE": "pools_file",
    "GHAPP_HOST": "host",
    "GHAPP_PORT": "port",
    "GHAPP_ADMIN_PORT": "admin_port",
    "GHAPP_MAX_BODY_BYTES": "max_body_bytes",
    "GHAPP_RUNNER_PREFIX": "runner_prefix",
    "GHAPP_LOG_LEVEL": "log_level",
    "GHAPP_LOG_FORMAT": "log_format",
    "GHAPP_SHUTDOWN_GRACE_SECONDS": "shutdown_grace_seconds",
    "GHAPP_WATCH_BROKEN_LIMIT_SECONDS": "watch_broken_limit_seconds",
    "GHAPP_ALLOWED_ACCOUNTS": "allowed_accounts",
    "GHAPP_RUNNER_SERVICE_ACCOUNT": "runner_service_account",
    "GHAPP_RECENT_JOBS": "recent_jobs",
    "GHAPP_USAGE_BY_REPOSITORY": "usage_by_repository",
    "KUBECONFIG": "kubeconfig",
    "GHAPP_MAX_RUNNERS": "max_runners",
    "GHAPP_LAUNCH_CONCURRENCY": "launch_concurrency",
    "GHAPP_INSTALLATION_WEIGHTS": "installation_weights",
    "GHAPP_RECONCILE_INTERVAL_SECONDS": "reconcile_interval_seconds",
    "GHAPP_RECONCILE_TIMEOUT_SECONDS": "reconcile_timeout_seconds",
    "GHAPP_REDELIVERY_LOOKBACK_SECONDS": "redelivery_lookback_seconds",
    "GHAPP_RECONCILE_RATE_SHARE": "reconcile_rate_share",
    "GHAPP_ACTIVITY_TTL_SECONDS": "activity_ttl_seconds",
    "GHAPP_SCAN_CONCURRENCY": "scan_concurrency",
    "GHAPP_GITHUB_CACHE_ENTRIES": "github_cache_entries",
    "GHAPP_IDLE_GRACE_SECONDS": "idle_grace_seconds",
    "GHAPP_REGISTRATION_TIMEOUT_SECONDS": "registration_timeout_seconds",
    "GHAPP_RUNNER_ATTEMPTS": "runner_attempts",
    "GHAPP_ORPHAN_GRACE_SECONDS": "orphan_grace_seconds",
    "GHAPP_LEASE_NAME": "lease_name",
    "GHAPP_LEASE_NAMESPACE": "lease_namespace",
    "GHAPP_LEASE_DURATION_SECONDS": "lease_duration_seconds",
    "POD_NAME": "identity",
}
_SECRET_FIELDS: Mapping[str, str] = {
    "GHAPP_PRIVATE_KEY": "private_key",
    "GHAPP_WEBHOOK_SECRET": "webhook_secret",
}
_FIELD_ENV = {field: env for env, field in {**_ENV_FIELDS, **_SECRET_FIELDS}.items()}
ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    *_ENV_FIELDS,
    *_SECRET_FIELDS,
    *(f"{name}_FILE" for name in _SECRET_FIELDS),
)
"""Every environment variable ghapp reads (documented in the README)."""


def _read_secret(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    path = environ.get(f"{name}_FILE")
    if value and path:
        raise ConfigError(f"{name} and {name}_FILE are both set; set only one")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return value or None


def _default_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def read_pools(path: Path) -> tuple[Pool, ...]:
    """Parse and validate a pools file; errors name the file and the field."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"GHAPP_POOLS_FILE: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"GHAPP_POOLS_FILE: {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"GHAPP_POOLS_FILE: {path}: should be a mapping with a 'pools:' list of pools, found "
            f"{_kind(document) if document is not None else 'an empty file'}"
        )
    try:
        return PoolsFile.model_validate(document).pools
    except ValidationError as exc:
        raise ConfigError(f"GHAPP_POOLS_FILE: {path}: " + _describe_pools(exc, document)) from None


def _describe_pools(exc: ValidationError, document: Any) -> str:
    """Pools file problems, naming the pool and the field (values are never repeated)."""
    raw_pools = document.get("pools") if isinstance(document, dict) else None
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        message = _plain_words(error)
        location = ".".join(str(part) for part in loc)
        if len(loc) < 3 or loc[0] != "pools" or not isinstance(loc[1], int):
            problems.append(f"{location}: {message}" if location else message)
            continue
        raw = raw_pools[loc[1]] if isinstance(raw_pools, list) and loc[1] < len(raw_pools) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        pool = f"pool {name!r}" if isinstance(name, str) else f"pools.{loc[1]}"
        field = ".".join(str(part) for part in loc[2:])
        if message.startswith((f"{field}.", f"{field}[")):
            problems.append(f"{pool}: {message}")  # the message names the field, more precisely
        elif isinstance(name, str):
            problems.append(f"{pool} ({location}): {message}")
        else:
            problems.append(f"{location}: {message}")
    return "; ".join(problems)


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """The one of `known` that `name` most likely misspells (case, ``_`` / ``-`` and typos aside)."""

    def squash(text: str) -> str:
        return text.lower().replace("_", "").replace("-", "")

    by_squashed = {squash(candidate): candidate for candidate in known}
    close = difflib.get_close_matches(squash(name), list(by_squashed), n=1, cutoff=0.8)
    return by_squashed[close[0]] if close else None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``GHAPP_*`` variables that ghapp does not read (typos), each with the likely meant one."""
    env = os.environ if environ is None else environ
    found = []
    for name in sorted(n for n in env if n.startswith("GHAPP_") and n not in ENVIRONMENT_VARIABLES):
        guess = did_you_mean(name, ENVIRONMENT_VARIABLES)
        found.append(f"{name} (did you mean {guess}?)" if guess else name)
    return found


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML parser's complaint on one line, with where it is (``line L, column C``)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def _kind(value: Any) -> str:
    """What a YAML value is, in words (never the value itself: pools may hold secrets in ``env``)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED: Mapping[str, str] = {
    "dict_type": "a mapping (name: value lines)",
    "model_type": "a mapping (name: value lines)",
    "model_attributes_type": "a mapping (name: value lines)",
    "tuple_type": "a list ([a, b] or '- ' lines)",
    "list_type": "a list ([a, b] or '- ' lines)",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
}


def _plain_words(error: Any) -> str:
    """One pydantic error in plain words, saying what kind of value was found instead (not the value)."""
    kind = error["type"]
    if kind == "missing":
        return "is missing"
    if kind == "extra_forbidden":
        known = list(Pool.model_fields) if len(error["loc"]) > 2 else ["pools"]
        guess = did_you_mean(str(error["loc"][-1]), known)
        hint = f"did you mean {guess}? " if guess else ""
        return f"is not a field ghapp knows ({hint}known: {', '.join(known)})"
    if kind in _EXPECTED:
        return f"should be {_EXPECTED[kind]}, found {_kind(error.get('input'))}"
    return str(error["msg"]).removeprefix("Value error, ")


def requested_log_format(environ: Mapping[str, str] | None = None) -> LogFormat:
    """GHAPP_LOG_FORMAT as far as it is valid, for the error line of settings that are not (``auto``
    otherwise)."""
    value = (os.environ if environ is None else environ).get("GHAPP_LOG_FORMAT", "").strip()
    return "json" if value == "json" else "text" if value == "text" else "auto"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment (``os.environ`` by default) and the pools file.

    `overrides` are field values that win over the environment (used by CLI flags and tests).
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {field: env[name] for name, field in _ENV_FIELDS.items() if env.get(name)}
    for name, field in _SECRET_FIELDS.items():
        secret = _read_secret(env, name)
        if secret is not None:
            raw[field] = secret
    raw.setdefault("namespace", _default_namespace())
    raw.setdefault("identity", env.get("HOSTNAME") or f"ghapp-{os.getpid()}")
    raw.update({key: value for key, value in overrides.items() if value is not None})
    pools_file = Path(raw.get("pools_file", DEFAULT_POOLS_FILE))
    raw["pools"] = read_pools(pools_file)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        names = dict(_FIELD_ENV)
        for name, field in _SECRET_FIELDS.items():
            if env.get(f"{name}_FILE"):
                names[field] = f"{name}_FILE ({env[f'{name}_FILE']})"
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            name = names.get(field, field or "settings")
            problems.append(f"{name}: {_plain_words(error)}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    # Imported here: manifests builds on this module. Every pool's rendered Job must pass the schema.
    from ghapp.manifests import check_pools

    check_pools(settings)
    return settings
