"""Errors a person can act on: each broken setup is one ``ghapp: error:`` line naming the setting or file,
exit status 2, no traceback — run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .keys import PRIVATE_KEY_PEM, PUBLIC_KEY_PEM


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghapp", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent-home", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed (asserting exit 2, nothing else, no traceback)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Valid credentials and settings; each test breaks one thing."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [{"name": "dev", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "me", "user": {}}],
                "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": "me"}}],
            }
        )
    )
    return {
        "GHAPP_APP_ID": "12345",
        "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
        "GHAPP_WEBHOOK_SECRET": "s3cr3t-value",
        "GHAPP_GITHUB_API_URL": "http://127.0.0.1:1",
        "GHAPP_HOST": "127.0.0.1",
        "GHAPP_PORT": str(free_port()),
        "GHAPP_ADMIN_PORT": str(free_port()),
        "KUBECONFIG": str(kubeconfig),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_kubeconfig_that_is_not_yaml(base_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("clusters: [oops\n")
    line = one_error_line(run("serve", env={**base_env, "KUBECONFIG": str(broken)}))
    assert line.startswith(f"ghapp: error: KUBECONFIG: {broken} is not valid YAML (")


def test_a_kubeconfig_without_current_context(base_env: dict[str, str], tmp_path: Path) -> None:
    config = yaml.safe_load(Path(base_env["KUBECONFIG"]).read_text())
    del config["current-context"]
    nocontext = tmp_path / "nocontext"
    nocontext.write_text(yaml.safe_dump(config))
    line = one_error_line(run("serve", env={**base_env, "KUBECONFIG": str(nocontext)}))
    assert line == (
        f"ghapp: error: KUBECONFIG: {nocontext}: it names no current-context; set one with "
        "`kubectl config use-context NAME`"
    )


def test_a_kubeconfig_that_does_not_exist(base_env: dict[str, str]) -> None:
    for command in ("serve", "reconcile", "setup"):
        args = ("reconcile", "--once") if command == "reconcile" else (command,)
        line = one_error_line(run(*args, env={**base_env, "KUBECONFIG": "/nonexistent"}))
        assert line == "ghapp: error: KUBECONFIG: /nonexistent does not exist (or is not a file)", command


@pytest.mark.parametrize("setting", ["GHAPP_PORT", "GHAPP_ADMIN_PORT"])
def test_a_listen_port_in_use(base_env: dict[str, str], busy_port: int, setting: str) -> None:
    line = one_error_line(run("serve", env={**base_env, setting: str(busy_port)}))
    assert line == f"ghapp: error: {setting}: cannot listen on 127.0.0.1:{busy_port}: Address already in use"


def test_setup_with_a_port_out_of_range(base_env: dict[str, str]) -> None:
    line = one_error_line(run("setup", "--port", "99999", env=base_env))
    assert line == "ghapp: error: --port: 99999 is not a port number (0 to 65535; 0: any free port)"


def test_setup_with_a_port_in_use(base_env: dict[str, str], busy_port: int, tmp_path: Path) -> None:
    result = run("setup", "--port", str(busy_port), "--output-dir", str(tmp_path / "creds"), env=base_env)
    line = one_error_line(result)
    assert line == f"ghapp: error: --port: cannot listen on 127.0.0.1:{busy_port}: Address already in use"


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (_pem(ed25519.Ed25519PrivateKey.generate()), "Ed25519"),
        (_pem(ec.generate_private_key(ec.SECP256R1())), "EC"),
    ],
    ids=["ed25519", "ec"],
)
def test_a_private_key_that_is_not_rsa(base_env: dict[str, str], key: str, kind: str) -> None:
    for command in ("serve", "check"):
        result = run(command, env={**base_env, "GHAPP_PRIVATE_KEY": key})
        if command == "check":  # check reports it as a line of its report
            assert result.returncode == 1
            assert f"FAIL  settings: invalid settings: GHAPP_PRIVATE_KEY: is an {kind} key" in result.stdout
            continue
        line = one_error_line(result)
        assert line.startswith(f"ghapp: error: invalid settings: GHAPP_PRIVATE_KEY: is an {kind} key; ")
        assert "RSA" in line
        assert key.splitlines()[1] not in result.stderr


def test_a_public_key_given_as_the_app_key(base_env: dict[str, str], tmp_path: Path) -> None:
    public = tmp_path / "app.pem"
    public.write_bytes(PUBLIC_KEY_PEM)
    env = {k: v for k, v in base_env.items() if k != "GHAPP_PRIVATE_KEY"}
    line = one_error_line(run("serve", env={**env, "GHAPP_PRIVATE_KEY_FILE": str(public)}))
    assert line.startswith(
        f"ghapp: error: invalid settings: GHAPP_PRIVATE_KEY_FILE ({public}): is a public key; "
        "ghapp needs the App's private key"
    )


def test_errors_are_json_lines_when_asked(base_env: dict[str, str], busy_port: int) -> None:
    env = {**base_env, "GHAPP_LOG_FORMAT": "json"}
    for result in (
        run("serve", env={**env, "GHAPP_PORT": str(busy_port)}),
        run("serve", env={**env, "GHAPP_MAX_RUNNERS": "lots"}),  # the settings themselves are invalid
        run("setup", "--port", "99999", env=env),
    ):
        line = json.loads(one_error_line(result))
        assert line["level"] == "error"
        assert line["logger"] == "ghapp"
        assert line["message"].startswith(("GHAPP_PORT: ", "invalid settings: GHAPP_MAX_RUNNERS", "--port: "))


def test_cluster_errors_name_the_server_and_the_context(base_env: dict[str, str]) -> None:
    line = one_error_line(run("setup", "--port", "0", env=base_env))  # nothing listens on the server
    assert line.startswith("ghapp: error: cannot write Secret ghapp/ghapp-credentials")
    assert line.endswith(f"(API server http://127.0.0.1:1, context dev of {base_env['KUBECONFIG']})")


@pytest.mark.parametrize("command", ["status", "usage"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_status_and_usage_without_a_running_ghapp_say_so_in_one_line(
    command: str, log_format: str, base_env: dict[str, str]
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/status.json"
    line = one_error_line(run(command, "--url", url, env={**base_env, "GHAPP_LOG_FORMAT": log_format}))
    if log_format == "json":
        record = json.loads(line)
        assert record["level"] == "error"
        assert f"cannot read {url}" in record["message"]
    else:
        assert line.startswith(f"ghapp: error: cannot read {url}: ")
