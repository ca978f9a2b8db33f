"""The Dockerfile, read as Docker reads it (no engine here): two stages, a small non-root final image."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "python3-dev", "libffi-dev", "libssl-dev", "git")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions (keyword, arguments) per stage; comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, line
            stages.append(Stage(base=match[1], name=match[2]))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def runs(stage: Stage) -> str:
    return "\n".join(stage.all("RUN"))


def test_a_builder_stage_makes_the_wheel(stages: list[Stage]) -> None:
    assert len(stages) == 2
    builder, final = stages
    assert builder.base == "python:3.12-slim"
    assert builder.name == "builder"
    commands = runs(builder)
    assert re.search(r"pip wheel .*--no-deps", commands) or "python -m build" in commands
    assert final.name is None
    assert final.base == "python:3.12-slim"


def test_the_final_stage_installs_only_the_wheel_without_cache_or_build_tools(stages: list[Stage]) -> None:
    final = stages[-1]
    commands = runs(final)
    installs = [c for c in commands.split("&&") if re.search(r"pip install", c)]
    assert installs, "the final stage installs the wheel"
    for install in installs:
        assert "--no-cache-dir" in install
        words = shlex.split(install)
        targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        assert targets
        assert all(t.endswith(".whl") for t in targets), targets
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", commands), tool
    assert "apt-get" not in commands
    # the source tree and the wheel are not copied in: only the builder's wheel, mounted for one RUN
    for copy in final.all("COPY") + final.all("ADD"):
        assert "--from=builder" in copy
        assert ".whl" in copy


def test_the_final_stage_runs_ghapp_serve_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert json.loads(final.last("ENTRYPOINT")) == ["ghapp"]
    assert json.loads(final.last("CMD")) == ["serve"]
    assert final.last("EXPOSE") == "8080 9090"  # webhook, admin
    # USER comes after every RUN: nothing runs as root once the user is set, and nothing needs to
    keywords = [key for key, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, key in enumerate(keywords) if key == "RUN")


def test_the_deployment_runs_the_images_user() -> None:
    deployment = (ROOT / "deploy" / "base" / "deployment.yaml").read_text()
    uid = parse_dockerfile((ROOT / "Dockerfile").read_text())[-1].last("USER").partition(":")[0]
    assert f"runAsUser: {uid}" in deployment


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "bench"} <= entries
    assert {"**/__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"} <= entries
    assert not {"ghapp", "pyproject.toml", "README.md"} & entries  # what the builder copies


def test_the_parser_joins_continuations_and_finds_stages() -> None:
    stages = parse_dockerfile(
        "# c\nFROM a:1 AS one\nRUN x \\\n    # inside\n    y\nFROM --platform=linux/amd64 b\nUSER 1\n"
    )
    assert [(s.base, s.name) for s in stages] == [("a:1", "one"), ("b", None)]
    assert stages[0].instructions == [("RUN", "x  y")]
    assert stages[1].last("USER") == "1"
