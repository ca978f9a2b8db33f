"""Where ghapp's Kubernetes access comes from: a kubeconfig file (KUBECONFIG, ~/.kube/config) or the pod's
service account; errors name the file, and every cluster error can name the API server and the context."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from ghapp.config import Settings
from ghapp.errors import ConfigError

DEFAULT_KUBECONFIG = "~/.kube/config"
_NO_CURRENT_CONTEXT = "it names no current-context; set one with `kubectl config use-context NAME`"


@dataclass(frozen=True, slots=True)
class KubeAccess:
    """A loaded client configuration and, for people, where it came from."""

    configuration: k8s.Configuration
    source: str
    """``context NAME of FILE`` or ``the pod's service account``."""

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def describe(self) -> str:
        """``API server URL, context NAME of FILE``: what a cluster error message should name."""
        return f"API server {self.server}, {self.source}"


def kubeconfig_file(settings: Settings) -> str | None:
    """The kubeconfig file(s) to load: KUBECONFIG (each of its files must exist), else ~/.kube/config if
    it exists, else None (the in-cluster service account)."""
    if settings.kubeconfig:
        paths = [p for p in settings.kubeconfig.split(os.pathsep) if p]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            what = "does not exist" if len(missing) == 1 else "do not exist"
            raise ConfigError(f"KUBECONFIG: {', '.join(missing)} {what} (or is not a file)")
        _precheck(paths)
        return settings.kubeconfig
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    if not default.is_file():
        return None
    _precheck([str(default)])
    return str(default)


def _precheck(paths: list[str]) -> None:
    """The mistakes a person makes in kubeconfig files, found before anything starts: not YAML, not a
    mapping, no current-context in any of them (the first file that sets it wins, as for kubectl)."""
    current = None
    for path in paths:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"KUBECONFIG: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"KUBECONFIG: {path} is not valid YAML ({_first_line(exc)})") from None
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ConfigError(
                f"KUBECONFIG: {path} is not a kubeconfig (a mapping with clusters, contexts, users)"
            )
        current = current or document.get("current-context")
    if not current:
        where = paths[0] if len(paths) == 1 else ", ".join(paths)
        raise ConfigError(f"KUBECONFIG: {where}: {_NO_CURRENT_CONTEXT}")


async def load(kubeconfig: str | None) -> KubeAccess:
    """Kubernetes access from the `kubeconfig` file(s) if given, else the in-cluster service account.

    A broken file (not YAML, no ``current-context``, an unknown context or cluster) is a `ConfigError`
    naming the file and what is wrong, never a traceback.
    """
    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException as exc:
            raise ConfigError(
                f"KUBECONFIG: not set, no {DEFAULT_KUBECONFIG}, and not in a cluster ({exc})"
            ) from None
        return KubeAccess(configuration, "the pod's service account")
    try:
        loader = await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except yaml.YAMLError as exc:
        raise ConfigError(f"KUBECONFIG: {kubeconfig} is not valid YAML ({_first_line(exc)})") from None
    except k8s_config.ConfigException as exc:
        raise ConfigError(f"KUBECONFIG: {kubeconfig}: {_plain(exc)}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"KUBECONFIG: {kubeconfig} cannot be used: {type(exc).__name__}: {exc}") from None
    return KubeAccess(configuration, f"context {_context_name(loader)} of {kubeconfig}")


def _context_name(loader: Any) -> str:
    try:
        return str(loader.current_context["name"])
    except (KeyError, TypeError, AttributeError):
        return "?"


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _plain(exc: k8s_config.ConfigException) -> str:
    text = _first_line(exc)
    if "current-context" in text:
        return _NO_CURRENT_CONTEXT
    return text.removeprefix("Invalid kube-config file. ")
