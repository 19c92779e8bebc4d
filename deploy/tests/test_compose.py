"""The Docker Compose kit deploy/compose: parsed with compose-spec (the
compose_spec Compose parser; unknown keys and malformed ports are errors), its
Envoy bootstrap validated by the pinned Envoy (`--mode validate`), and the
wiring between the services checked."""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import pytest
from compose_spec import PyCompose

from conftest import REPO, find_envoy_binary, find_hydra_authz_binary, load_yaml, run

COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
INTROSPECT_URL = "http://hydra:4445/admin/oauth2/introspect"


@pytest.fixture(scope="module")
def compose() -> dict:
    parsed = PyCompose.from_yaml(COMPOSE_FILE.read_text())
    parsed.validate()
    return parsed.to_dict()


@pytest.fixture(scope="module")
def envoy_config() -> dict:
    return load_yaml(COMPOSE_DIR / "envoy.yaml")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def container_ports(service: dict) -> set[int]:
    """Ports a service offers on the compose network (expose + published targets)."""
    ports = {int(p) for p in service.get("expose", [])}
    for p in published(service):
        ports.add(int(p.rsplit(":", 1)[-1].split("/")[0]))
    return ports


def test_compose_spec_rejects_unknown_keys():
    """compose-spec is really validating: a misspelt service key is refused."""
    text = COMPOSE_FILE.read_text().replace("    depends_on:\n      - hydra\n", "    depend_on:\n      - hydra\n", 1)
    with pytest.raises(Exception):
        PyCompose.from_yaml(text).validate()


def test_services(compose):
    assert set(compose["services"]) == {"hydra", "hydra-authz", "envoy", "api"}


def test_hydra_v2_in_memory_dev(compose):
    hydra = compose["services"]["hydra"]
    # The release the real-Hydra tests build and run (tests/hydra/go.mod).
    pinned = re.search(r"github\.com/ory/hydra/v2 (v\d+\.\d+\.\d+)", (REPO / "tests" / "hydra" / "go.mod").read_text())
    assert pinned, "tests/hydra/go.mod pins Hydra"
    assert hydra["image"] == f"oryd/hydra:{pinned.group(1)}"
    # Telemetry off, as in the tests: nothing leaves the machine.
    assert hydra["command"] == ["serve", "all", "--dev", "--sqa-opt-out"]
    env = env_of(hydra)
    assert env["SQA_OPT_OUT"] == "true"
    assert env["DSN"] == "memory"
    assert env["URLS_SELF_ISSUER"] == "http://127.0.0.1:4444/"
    assert len(env["SECRETS_SYSTEM"]) >= 16  # Hydra refuses shorter system secrets
    assert 4445 in container_ports(hydra)
    # The admin API (introspection, client management) is never published on the host.
    assert not any(p.endswith(":4445") for p in published(hydra))


def test_hydra_authz_wiring(compose):
    svc = compose["services"]["hydra-authz"]
    build = svc["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    env = env_of(svc)
    url = env["HYDRA_AUTHZ_INTROSPECTION__URL"]
    assert url == INTROSPECT_URL
    assert urlparse(url).hostname in compose["services"]
    assert urlparse(url).port in container_ports(compose["services"][urlparse(url).hostname])
    assert env["HYDRA_AUTHZ_SERVER__GRPC_ADDR"] == "0.0.0.0:9191"
    assert env["HYDRA_AUTHZ_SERVER__HTTP_ADDR"] == "0.0.0.0:9192"
    assert {9191, 9192} <= container_ports(svc)
    assert "hydra" in svc["depends_on"]


def test_depends_on_names_real_services(compose):
    for name, svc in compose["services"].items():
        deps = svc.get("depends_on", [])
        deps = list(deps) if not isinstance(deps, dict) else list(deps.keys())
        for dep in deps:
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"


def test_hydra_admin_is_reachable_from_hydra_authz_only(compose):
    """Hydra's admin API (4445) has no auth: no service but hydra-authz
    shares a network with Hydra, and that network is internal."""
    services = compose["services"]
    nets = {name: set(svc.get("networks", ["default"])) for name, svc in services.items()}
    sharing = {name for name, n in nets.items() if name != "hydra" and n & nets["hydra"]}
    assert sharing == {"hydra-authz"}, nets
    for net in nets["hydra"] & nets["hydra-authz"]:
        assert compose["networks"][net].get("internal") is True, net
    # Envoy still reaches what its clusters name.
    assert nets["envoy"] & nets["hydra-authz"] and nets["envoy"] & nets["api"]


def test_published_ports_are_loopback_only(compose):
    for name, svc in compose["services"].items():
        for p in published(svc):
            assert p.startswith("127.0.0.1:"), f"{name} publishes {p} on all interfaces"


def clusters(envoy_config) -> dict[str, tuple[str, int]]:
    out = {}
    for c in envoy_config["static_resources"]["clusters"]:
        (ep,) = [lb["endpoint"] for e in c["load_assignment"]["endpoints"] for lb in e["lb_endpoints"]]
        sa = ep["address"]["socket_address"]
        out[c["name"]] = (sa["address"], sa["port_value"])
    return out


def http_connection_manager(envoy_config) -> dict:
    (listener,) = envoy_config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


def test_envoy_clusters_resolve_to_compose_services(compose, envoy_config):
    envoy = compose["services"]["envoy"]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in envoy["volumes"]]
    sources = {m.split(":")[0]: m.split(":")[1] for m in mounts}
    assert sources.get("./envoy.yaml") == "/etc/envoy/envoy.yaml"
    assert "/etc/envoy/envoy.yaml" in envoy["command"]
    for name, (host, port) in clusters(envoy_config).items():
        assert host in compose["services"], f"cluster {name} -> {host}: not a compose service"
        assert port in container_ports(compose["services"][host]), f"cluster {name}: {host} does not offer port {port}"
    assert clusters(envoy_config)["hydra_authz"] == ("hydra-authz", 9191)
    for c in envoy_config["static_resources"]["clusters"]:
        assert c["type"] == "STRICT_DNS", "compose service names need DNS resolution"
    # hydra-authz speaks gRPC: the cluster must be HTTP/2.
    authz = next(c for c in envoy_config["static_resources"]["clusters"] if c["name"] == "hydra_authz")
    opts = authz["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]


def test_envoy_listener_published(compose, envoy_config):
    (listener,) = envoy_config["static_resources"]["listeners"]
    sa = listener["address"]["socket_address"]
    assert sa["address"] == "0.0.0.0"
    assert f"127.0.0.1:{sa['port_value']}:{sa['port_value']}" in published(compose["services"]["envoy"])
    assert envoy_config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_filters_and_routes_same_as_repo_bootstrap(envoy_config):
    """Only addresses differ from deploy/envoy/envoy.yaml (the file the E2E tests run)."""
    original = load_yaml(REPO / "deploy" / "envoy" / "envoy.yaml")
    ours, theirs = http_connection_manager(envoy_config), http_connection_manager(original)
    assert ours == theirs
    ext_authz = next(f for f in ours["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")["typed_config"]
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "hydra_authz"
    upstream_clusters = {r["route"]["cluster"] for r in ours["route_config"]["virtual_hosts"][0]["routes"]}
    assert upstream_clusters <= set(clusters(envoy_config))


def test_envoy_validates_compose_bootstrap():
    envoy = find_envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary (scripts/test-deploy.sh installs the pinned one)")
    out = run([str(envoy), "--mode", "validate", "-c", str(COMPOSE_DIR / "envoy.yaml"), "--log-level", "error"])
    assert out.returncode == 0, out.stderr + out.stdout
    assert "OK" in out.stdout


def test_image_config_plus_compose_env_accepted_by_hydra_authz(compose):
    """The image's baked-in config with the compose environment passes `config check`."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_AUTHZ_", "OTEL_"))}
    env.update(env_of(compose["services"]["hydra-authz"]))
    out = run(
        [str(binary), "config", "check", "--config", str(REPO / "config" / "hydra-authz.toml"),
         "--envoy", str(COMPOSE_DIR / "envoy.yaml")],
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert INTROSPECT_URL in out.stdout
    assert '"0.0.0.0:9191"' in out.stdout
    # The compose Envoy's routes are all covered by the rules (or their own policy).
    assert "warning" not in out.stderr, out.stderr


def test_readme_seed_clients_and_calls():
    readme = (COMPOSE_DIR / "README.md").read_text()
    creates = [c for c in re.findall(r"hydra create client[^\n]*(?:\\\n[^\n]*)*", readme)]
    assert len(creates) == 2, creates
    reader, writer = creates
    for cmd, scope in ((reader, "read_date"), (writer, "post_echo")):
        assert "--grant-type client_credentials" in cmd
        assert f"--scope {scope}" in cmd
        assert "--endpoint http://127.0.0.1:4445" in cmd
    assert "docker compose -f deploy/compose/compose.yaml up" in readme
    assert "http://127.0.0.1:4444/oauth2/token" in readme
    assert re.search(r"curl .*http://127\.0\.0\.1:8080/date", readme)
    assert re.search(r"curl .*-X POST.*http://127\.0\.0\.1:8080/echo", readme)
