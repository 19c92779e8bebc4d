"""The Envoy kits: deploy/envoy (envoy.yaml, mtls-to-hydra-authz.yaml) and
deploy/compose/envoy.yaml.

Header hygiene on every client-facing HTTP connection manager
(headers_with_underscores_action: REJECT_REQUEST), ext_authz aimed at the
Check port and never at hydra-authz's admin API listener, validation by the
pinned Envoy, and a real Envoy refusing an underscore header. The Rust
end-to-end tests run deploy/envoy/envoy.yaml against a real hydra-authz;
these need no hydra-authz binary.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO, find_envoy_binary, load_yaml, run

ENVOY_KIT = REPO / "deploy" / "envoy" / "envoy.yaml"
MTLS_SNIPPET = REPO / "deploy" / "envoy" / "mtls-to-hydra-authz.yaml"
COMPOSE_ENVOY = REPO / "deploy" / "compose" / "envoy.yaml"
KITS = [ENVOY_KIT, COMPOSE_ENVOY]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
# hydra-authz's listeners (server.grpc_addr / http_addr / admin_addr defaults).
CHECK_PORT, HTTP_PORT, ADMIN_API_PORT = 9191, 9192, 9193


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def connection_managers(doc: dict) -> list[dict]:
    """Every HTTP connection manager of the bootstrap's listeners (they all
    face clients: the kits' only other HTTP endpoint is Envoy's admin)."""
    found = [n["typed_config"] for n in walk(doc["static_resources"]["listeners"]) if n.get("name") == HCM_FILTER]
    assert found, "no HTTP connection manager found"
    return found


def cluster_ports(doc: dict) -> dict[str, list[int]]:
    out = {}
    for c in doc["static_resources"]["clusters"]:
        out[c["name"]] = [n["port_value"] for n in walk(c["load_assignment"]) if "port_value" in n]
    return out


@pytest.mark.parametrize("kit", KITS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_connection_manager_rejects_underscore_headers(kit):
    for hcm in connection_managers(load_yaml(kit)):
        assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
        # The path hygiene next to it stays.
        assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
        assert hcm["strip_any_host_port"] is True and hcm["strip_trailing_host_dot"] is True
        assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


@pytest.mark.parametrize("kit", KITS, ids=lambda p: str(p.relative_to(REPO)))
def test_ext_authz_targets_the_check_port_not_the_admin_api(kit):
    doc = load_yaml(kit)
    ports = cluster_ports(doc)
    for hcm in connection_managers(doc):
        ext_authz = [f["typed_config"] for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ_FILTER]
        assert len(ext_authz) == 1
        (cfg,) = ext_authz
        assert cfg["failure_mode_allow"] is False
        cluster = cfg["grpc_service"]["envoy_grpc"]["cluster_name"]
        assert ports[cluster] == [CHECK_PORT], f"ext_authz cluster {cluster} must reach hydra-authz's Check port"
    # No cluster of the kit reaches hydra-authz's admin API listener.
    assert not [name for name, p in ports.items() if ADMIN_API_PORT in p]


@pytest.mark.parametrize("kit", KITS, ids=lambda p: str(p.relative_to(REPO)))
def test_resource_metadata_route_is_the_only_one_without_ext_authz(kit):
    """RFC 9728: /.well-known/oauth-protected-resource (and resource paths
    under it) go to hydra-authz's HTTP listener with ext_authz off, before any
    other route; every other route keeps ext_authz."""
    doc = load_yaml(kit)
    ports = cluster_ports(doc)
    for hcm in connection_managers(doc):
        routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
        disabled = [r for r in routes
                    if r.get("typed_per_filter_config", {}).get(EXT_AUTHZ_FILTER, {}).get("disabled") is True]
        assert len(disabled) == 1, disabled
        (route,) = disabled
        assert routes[0] is route, "first, so no other route can shadow it"
        assert route["match"] == {"path_separated_prefix": "/.well-known/oauth-protected-resource"}
        assert ports[route["route"]["cluster"]] == [HTTP_PORT]
        # Nothing else reaches hydra-authz's HTTP listener (/metrics stays private).
        assert [r for r in routes if ports[r["route"]["cluster"]] == [HTTP_PORT]] == [route]


def test_mtls_snippet_is_an_upstream_block_only():
    """The mTLS snippet adds no listener, so no connection manager to harden."""
    doc = load_yaml(MTLS_SNIPPET)
    assert set(doc) == {"transport_socket"}
    assert doc["transport_socket"]["typed_config"]["@type"].endswith(".UpstreamTlsContext")
    assert not [n for n in walk(doc) if n.get("name") == HCM_FILTER]


def with_mtls_snippet(bootstrap: str, pem_files: dict[str, Path]) -> str:
    """deploy/envoy/envoy.yaml with the mTLS block added to the hydra_authz
    cluster, as the Rust end-to-end tests do (tests/support/stack.rs)."""
    block = ""
    for line in MTLS_SNIPPET.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        line = (line.replace("/etc/envoy/tls/ca.pem", str(pem_files["ca"]))
                .replace("/etc/envoy/tls/client.pem", str(pem_files["cert"]))
                .replace("/etc/envoy/tls/client.key", str(pem_files["key"])))
        block += "      " + line + "\n"
    anchor = "    - name: hydra_authz\n"
    assert bootstrap.count(anchor) == 1
    return bootstrap.replace(anchor, anchor + block, 1)


def envoy_or_skip() -> Path:
    envoy = find_envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary (scripts/test-deploy.sh installs the pinned one)")
    return envoy


def validate(envoy: Path, text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    return run([str(envoy), "--mode", "validate", "-c", str(path), "--log-level", "error"])


def test_envoy_validates_the_kit(tmp_path, pem_files):
    envoy = envoy_or_skip()
    text = ENVOY_KIT.read_text()
    out = validate(envoy, text, tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    out = validate(envoy, with_mtls_snippet(text, pem_files), tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    # Envoy really checks the enum (a misspelt value is not silently ALLOW).
    needle = "headers_with_underscores_action: REJECT_REQUEST\n"
    assert text.count(needle) == 1
    out = validate(envoy, text.replace(needle, "headers_with_underscores_action: REJECT\n"), tmp_path)
    assert out.returncode != 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite_ports(text: str, mapping: dict[int, int]) -> str:
    """The kit's ports each appear once, on a `port_value:` line."""
    for old, new in mapping.items():
        needle = f"port_value: {old}\n"
        assert text.count(needle) == 1, needle
        text = text.replace(needle, f"port_value: {new}\n")
    return text


def raw_http1(port: int, headers: list[tuple[str, str]]) -> int:
    """Status of one HTTP/1.1 GET /date, headers sent exactly as given."""
    lines = ["GET /date HTTP/1.1", "Host: api.example.com", "Connection: close", *[f"{k}: {v}" for k, v in headers]]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1.1 "), data
    return int(status_line.split()[1])


def test_real_envoy_refuses_underscore_headers(tmp_path):
    """The shipped bootstrap, on free ports, with nothing behind ext_authz:
    a normal request fails closed (503), one with an underscore header name
    is refused by Envoy itself (400) before ext_authz is asked."""
    envoy = envoy_or_skip()
    listener, admin = free_port(), free_port()
    text = rewrite_ports(ENVOY_KIT.read_text(), {9901: admin, 8080: listener, CHECK_PORT: free_port(), 8081: free_port()})
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    log = open(tmp_path / "envoy.log", "w+")
    proc = subprocess.Popen(
        [str(envoy), "-c", str(path), "--log-level", "warn", "--disable-hot-restart"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"envoy exited {proc.returncode}:\n{(tmp_path / 'envoy.log').read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "envoy did not become ready"
            time.sleep(0.1)

        # Dash form: reaches ext_authz, which is down: fail closed.
        assert raw_http1(listener, [("x-client-id", "admin")]) == 503
        # Underscore twins of the identity headers, and any other underscore name.
        for name in ("x_client_id", "X_Client_Id", "x-client_id", "x_scopes", "x_subject", "foo_bar"):
            assert raw_http1(listener, [(name, "admin")]) == 400, name
        # Still serving afterwards.
        assert raw_http1(listener, []) == 503
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_compose_kit_keeps_the_admin_api_private():
    """The compose stack configures no admin credentials (the admin listener
    does not start) and neither exposes nor publishes its port."""
    compose = load_yaml(REPO / "deploy" / "compose" / "compose.yaml")
    svc = compose["services"]["hydra-authz"]
    env = {str(k): str(v) for k, v in (svc.get("environment") or {}).items()}
    assert not [k for k in env if k.startswith("HYDRA_AUTHZ_SERVER__ADMIN")]
    offered = {str(p) for p in svc.get("expose", [])} | {str(p) for p in svc.get("ports", [])}
    assert not [p for p in offered if str(ADMIN_API_PORT) in p]
    assert yaml.safe_dump(svc).count(str(ADMIN_API_PORT)) == 0
