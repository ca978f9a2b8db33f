"""The runner container's rendered command, really executed: what its processes can read of the credential.

The command and env come from the rendered Job manifest. It runs as PID 1 of its own PID namespace
(``unshare --pid --fork --mount-proc``, as root) with a temp folder bound onto ``/home`` in its own mount
namespace, so ``/home/runner`` holds stub ``config.sh`` / ``run.sh``. The stubs (and a child standing for a
job step) run a scanner that reads every process's ``/proc/PID/environ`` and ``cmdline`` and reports which
hold the credential. Reading as root, the scanner sees at least what a job step (same uid as PID 1) can see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghapp import manifests, planner, policy
from ghapp.cli import SAMPLE_PAYLOAD
from ghapp.config import load_settings
from ghapp.models import WorkflowJob

FAKE_TOKEN = "AABBCCDDEEFFGGHHIIJJKKLLMMNNOO-registration-token"
FAKE_JITCONFIG = "eyJydW5uZXIiOiJmYWtlIGppdCBjb25maWcgZm9yIHRoZSB0ZXN0In0-jitconfig"

SCANNER = """
import json, os, sys
needle_file, out_dir, label = sys.argv[1:4]
needles = json.loads(open(needle_file).read())
found = []
for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:  # the process ended meanwhile
        continue
    found.append({
        "pid": int(pid),
        "cmdline": cmdline.decode(errors="replace").split("\\0")[:-1],
        "env_names": sorted(v.split(b"=")[0].decode() for v in environ.split(b"\\0") if v),
        "in_environ": sorted(n for n, v in needles.items() if v.encode() in environ),
        "in_cmdline": sorted(n for n, v in needles.items() if v.encode() in cmdline),
    })
with open(os.path.join(out_dir, label + ".json"), "w") as out:
    json.dump(found, out)
"""


@dataclass(frozen=True)
class Pod:
    """What one run of the runner container showed: its exit code and each scan's view of /proc."""

    exit_code: int
    scans: dict[str, list[dict[str, Any]]]
    output: str


def render(mode: str, tmp_path: Path) -> dict[str, Any]:
    """The runner container of the Job ghapp renders for a queued job in a pool of `mode`."""
    pools = tmp_path / "pools.yaml"
    pools.write_text(f"pools:\n  - name: p\n    mode: {mode}\n    labels: [self-hosted, linux, x64]\n")
    settings = load_settings({"GHAPP_POOLS_FILE": str(pools), "GHAPP_NAMESPACE": "runners"})
    job = WorkflowJob.from_payload(json.loads(SAMPLE_PAYLOAD.read_text()))
    plan = planner.plan(job, settings, facts=policy.Facts(app_owner=job.repository.owner))
    assert isinstance(plan, planner.RunnerPlan)
    (container,) = manifests.runner_job(plan)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def container_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The env the kubelet gives the container: the image's PATH/HOME, then the spec's, Secrets resolved."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/home/runner"}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def run_pod(
    container: dict[str, Any], *, secret: dict[str, str], stubs: dict[str, str], tmp_path: Path
) -> Pod:
    """Run `container`'s command as PID 1 of a new PID namespace, with `stubs` in /home/runner."""
    home = tmp_path / "home"
    runner_home = home / "runner"
    tools = tmp_path / "tools"
    scans = tmp_path / "scans"
    for folder in (runner_home, tools, scans):
        folder.mkdir(parents=True)
    (tools / "scan.py").write_text(SCANNER)
    (tools / "needles.json").write_text(json.dumps({"token": FAKE_TOKEN, "jitconfig": FAKE_JITCONFIG}))
    # /home is replaced inside the namespace: the scanner (stdlib only) runs on the base interpreter, isolated
    python = Path(os.path.realpath(sys.executable))
    for needed in (python, tmp_path):
        assert not needed.is_relative_to("/home"), f"{needed} is hidden by the bind mount onto /home"
    scan = f"{python} -I {tools / 'scan.py'} {tools / 'needles.json'} {scans}"
    for name, body in stubs.items():
        stub = runner_home / name
        stub.write_text("#!/bin/bash\nset -eu\n" + textwrap.dedent(body).replace("@SCAN@", scan))
        stub.chmod(0o755)
    setup = 'mount --bind "$0" /home && cd "$1" && shift && exec "$@"'
    namespace = ["unshare", "--pid", "--fork", "--mount-proc", "--", "/bin/sh", "-c", setup, str(home)]
    result = subprocess.run(
        [*namespace, container["workingDir"], *container["command"], *container.get("args", [])],
        env=container_env(container, secret),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    views = {path.stem: json.loads(path.read_text()) for path in scans.glob("*.json")}
    return Pod(exit_code=result.returncode, scans=views, output=result.stdout + result.stderr)


def holders(scan: list[dict[str, Any]], needle: str) -> list[tuple[int, list[str], str]]:
    """The processes of one scan that hold `needle`, and where (environ / cmdline)."""
    return [
        (process["pid"], process["cmdline"], where)
        for process in scan
        for where in ("environ", "cmdline")
        if needle in process[f"in_{where}"]
    ]


def pid1(scan: list[dict[str, Any]]) -> dict[str, Any]:
    (first,) = (process for process in scan if process["pid"] == 1)
    assert isinstance(first, dict)
    return first


RUN_SH = ["/bin/bash", "/home/runner/run.sh"]
"""PID 1's command line once run.sh runs (the stub's ``#!/bin/bash`` line)."""

# run.sh runs one job: it scans /proc, then starts a step (a child, as the runner's Worker would) that scans
RUN_ONE_JOB = """
    @SCAN@ run
    bash -c "@SCAN@ step; true"
"""
REGISTRATION_STUBS = {
    # config.sh needs the token (from the environment, as the real one reads it) and leaves .runner behind
    "config.sh": """
        test -n "${ACTIONS_RUNNER_INPUT_TOKEN:-}"
        @SCAN@ config
        echo configured > /home/runner/.runner
        """,
    # a configured runner runs one job, then exits 7 like a runner GitHub refuses as deprecated
    "run.sh": "test -f /home/runner/.runner\n" + RUN_ONE_JOB + "exit 7\n",
}


def test_no_process_holds_the_registration_token_while_the_runner_runs(tmp_path: Path) -> None:
    container = render("registration-token", tmp_path)
    pod = run_pod(container, secret={"token": FAKE_TOKEN}, stubs=REGISTRATION_STUBS, tmp_path=tmp_path)

    assert pod.exit_code == 7, pod.output  # run.sh's exit code is the container's: PID 1 *is* run.sh
    assert set(pod.scans) == {"config", "run", "step"}, pod.output
    # the scanner does see the token where it is: PID 1 (the shell) and config.sh hold it while configuring
    assert (1, "environ") in {(pid, where) for pid, _, where in holders(pod.scans["config"], "token")}
    # from the moment run.sh runs, no process of the pod holds it, in its environment or its command line
    for label in ("run", "step"):
        scan = pod.scans[label]
        assert pid1(scan)["cmdline"] == RUN_SH  # exec'd: no shell left holding a copy
        assert holders(scan, "token") == [], label
    assert any(p["cmdline"][:2] == ["bash", "-c"] for p in pod.scans["step"])  # the step saw itself too
    assert "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE" in pid1(pod.scans["run"])["env_names"]
    # config.sh still got everything else it is configured with
    configured = set(pid1(pod.scans["config"])["env_names"])
    assert {"ACTIONS_RUNNER_INPUT_URL", "ACTIONS_RUNNER_INPUT_NAME"} <= configured


def test_a_jit_runner_holds_its_config_only_in_the_environment_of_run_sh(tmp_path: Path) -> None:
    container = render("jit", tmp_path)
    stubs = {
        "run.sh": 'test -n "${ACTIONS_RUNNER_INPUT_JITCONFIG:-}"\n' + RUN_ONE_JOB,
    }
    pod = run_pod(container, secret={"jitconfig": FAKE_JITCONFIG}, stubs=stubs, tmp_path=tmp_path)

    assert pod.exit_code == 0, pod.output
    assert set(pod.scans) == {"run", "step"}, pod.output
    for scan in pod.scans.values():
        first = pid1(scan)
        assert first["cmdline"] == RUN_SH  # no wrapper: run.sh is PID 1
        # what README's Security section says a JIT pod keeps: the config in run.sh's environment (the
        # runner needs it there; it holds this one runner's credentials, which it also writes to its home)
        assert "jitconfig" in first["in_environ"]
        assert all("jitconfig" not in process["in_cmdline"] for process in scan)  # never in an argv
        assert holders(scan, "token") == []
        assert "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE" in first["env_names"]
