"""The command line, run as a user would (a subprocess for `serve`, `main()` for the offline commands)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ghapp.cli import SAMPLE_PAYLOAD, main

from .keys import PRIVATE_KEY_PEM
from .schema import validate


def test_render_prints_valid_manifests_without_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render"]) == 0
    out = capsys.readouterr().out
    secret, job = list(yaml.safe_load_all(out))
    secret = {
        **secret,
        "metadata": {
            **secret["metadata"],
            "ownerReferences": [
                {**secret["metadata"]["ownerReferences"][0], "uid": "00000000-0000-0000-0000-000000000000"}
            ],
        },
    }
    validate(secret)
    validate(job)
    assert secret["stringData"] == {"token": "<registration-token>"}
    assert job["metadata"]["name"] == "ghapp-29679449"
    assert "&id" not in out  # no YAML anchors: readable, copy-pasteable manifests


def test_render_explains_a_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = json.loads(SAMPLE_PAYLOAD.read_text())
    payload["workflow_job"]["labels"] = ["windows"]
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    assert main(["render", "--payload", str(path)]) == 1
    assert "no pool has all of the job's labels ['windows']" in capsys.readouterr().out


def test_render_rejects_a_broken_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "payload.json"
    path.write_text('{"action": "queued"}')
    assert main(["render", "--payload", str(path)]) == 2
    assert "workflow_job" in capsys.readouterr().err


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghapp", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_to_start_without_webhook_secret() -> None:
    result = _run("serve", env={"GHAPP_APP_ID": "1", "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM})
    assert result.returncode == 2
    assert "GHAPP_WEBHOOK_SECRET" in result.stderr
    assert "PRIVATE KEY" not in result.stderr + result.stdout


def test_serve_names_a_bad_setting() -> None:
    result = _run("serve", env={"GHAPP_PORT": "not-a-port", "GHAPP_WEBHOOK_SECRET": "s3cr3t-value"})
    assert result.returncode == 2
    assert "GHAPP_PORT" in result.stderr
    assert "s3cr3t-value" not in result.stderr


def test_help_explains_each_command() -> None:
    result = _run("--help", env={})
    assert result.returncode == 0
    for command in ("serve", "render"):
        assert command in result.stdout
