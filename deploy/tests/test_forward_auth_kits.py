"""The forward-auth kits: deploy/nginx, deploy/caddy, deploy/traefik,
deploy/envoy/envoy-http-service.yaml and deploy/istio/ext-authz-http-provider.yaml.

Real tools where there are any: nginx and Caddy (Debian's packages, put on
PATH by scripts/install-proxies.sh) check and run their kits, the pinned
Envoy validates and runs its kit. Each proxy runs on free ports in front of
a stand-in hydra-authz (answering like the real forward-auth endpoint) and a
stand-in upstream that echoes what it got, so these tests pin the proxy's
side of the contract: what reaches hydra-authz, what reaches the upstream
(identity headers from hydra-authz only), what the client gets on a denial.
The Rust end-to-end tests run the same kits against the real hydra-authz.
Traefik has no package here: its file is checked for shape only, Istio's
against its CRD schema (AuthorizationPolicy) and API (meshConfig).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cloudcoil.models.istio.security import v1 as istio_security_v1

from conftest import REPO, find_envoy_binary, load_yaml, run

# Headers frameworks read a method override from (hydra-authz refuses a POST
# naming another method in one: it must see them).
METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")


def underscore_spellings(name):
    """Every spelling of `name` with at least one '-' written '_'."""
    parts = name.split("-")
    out = set()
    for mask in range(1, 2 ** (len(parts) - 1)):
        spelled = parts[0]
        for i, part in enumerate(parts[1:]):
            spelled += ("_" if mask >> i & 1 else "-") + part
        out.add(spelled)
    return out


NGINX_KIT = REPO / "deploy" / "nginx" / "nginx.conf"
CADDY_KIT = REPO / "deploy" / "caddy" / "Caddyfile"
TRAEFIK_KIT = REPO / "deploy" / "traefik" / "dynamic.yaml"
ENVOY_HTTP_KIT = REPO / "deploy" / "envoy" / "envoy-http-service.yaml"
ISTIO_HTTP_KIT = REPO / "deploy" / "istio" / "ext-authz-http-provider.yaml"

# The kits' ports: proxy listener, upstream, hydra-authz's [forward_auth] addr.
PROXY_PORT, UPSTREAM_PORT, FORWARD_AUTH_PORT = 8080, 8081, 9194
IDENTITY = ("x-client-id", "x-scopes", "x-subject")
# What a client might send to impersonate someone: every identity header in
# another case, twice, and underscore spellings that CGI/WSGI/PHP read as
# X-Client-Id (CVE-2025-64484).
SMUGGLED = [
    ("X-Client-Id", "admin"), ("x-client-id", "admin2"), ("X-SCOPES", "admin"), ("x-subject", "root"),
    ("X-Subject", "root2"), ("x_client_id", "admin"), ("X_Scopes", "admin"), ("x-client_id", "admin"),
    ("X_Subject", "root"),
]
ALLOW = {"x-client-id": "reader", "x-scopes": "read_date", "x-subject": "alice"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must appear exactly once"
    return text.replace(old, new)


def tool(name: str) -> Path | None:
    """<NAME>_BIN, else PATH, else where scripts/install-proxies.sh unpacks it."""
    env = os.environ.get(f"{name.upper()}_BIN")
    if env:
        return Path(env)
    found = shutil.which(name)
    if found:
        return Path(found)
    local = REPO / ".venv-deploy" / name / "bin" / name
    return local if local.exists() else None


def tool_or_skip(name: str) -> Path:
    found = tool(name)
    if found is None:
        pytest.skip(f"no {name} binary: run scripts/install-proxies.sh {name} (scripts/test-deploy.sh does)")
    return found


# ----------------------------------------------------- stand-in servers


class Recorder:
    """The stand-in hydra-authz and upstream, on free loopback ports.

    hydra-authz decides by the original path (whichever way the proxy says
    what it is): /public allows with no identity, /deny/<status> denies
    like hydra-authz does, anything else allows as ALLOW. Every request
    either one sees is recorded as (method, path, [(name, value)...])."""

    def __init__(self):
        self.auth_seen: list[dict] = []
        self.upstream_seen: list[dict] = []
        recorder = self

        def headers_of(h: BaseHTTPRequestHandler) -> list[tuple[str, str]]:
            return [(k.lower(), v) for k, v in h.headers.items()]

        class Auth(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                hdrs = headers_of(self)
                recorder.auth_seen.append({"method": self.command, "path": self.path, "headers": hdrs})
                d = dict(hdrs)
                original = d.get("x-forwarded-uri") or d.get("x-original-uri") or self.path.removeprefix("/ext-authz")
                original = original.split("?", 1)[0]
                body = b""
                if original.startswith("/deny/"):
                    status = int(original.rsplit("/", 1)[1])
                    body = json.dumps({"type": "about:blank", "title": "denied by stand-in", "status": status}).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/problem+json")
                    self.send_header("cache-control", "no-store")
                    if status in (401, 403):
                        self.send_header("www-authenticate", f'Bearer error="stand_in_{status}"')
                else:
                    self.send_response(200)
                    if original != "/public":
                        for k, v in ALLOW.items():
                            self.send_header(k, v)
                    missing = [k for k in IDENTITY if original == "/public"]
                    self.send_header("x-envoy-auth-headers-to-remove",
                                     ",".join(missing + ["x_client_id", "x_scopes", "x_subject"]))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any

            def log_message(self, *args):
                pass

        class Upstream(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode()
                recorder.upstream_seen.append({"method": self.command, "path": self.path,
                                               "headers": headers_of(self), "body": body})
                out = b'{"ok":true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any

            def log_message(self, *args):
                pass

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Auth), ThreadingHTTPServer(("127.0.0.1", 0), Upstream)]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.auth_port = self.servers[0].server_address[1]
        self.upstream_port = self.servers[1].server_address[1]

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def stand_ins():
    r = Recorder()
    yield r
    r.close()


def raw_request(port: int, method: str, target: str, headers: list[tuple[str, str]], body: str = "") -> tuple[int, dict, str]:
    """One HTTP/1.1 request with headers sent exactly as given (urllib
    would merge duplicates and refuse some names). Returns status, headers
    (lower-case names, repeated ones joined with ", ") and body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: api.example.com", "Connection: close",
             *[f"{k}: {v}" for k, v in headers]]
    if body:
        lines.append(f"Content-Length: {len(body.encode())}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs: dict[str, str] = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        hdrs[k] = f"{hdrs[k]}, {v.strip()}" if k in hdrs else v.strip()
    return int(status_line.split()[1]), hdrs, rest.decode("latin-1")


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listening on {port}:\n{log.read_text()}"
            time.sleep(0.1)


def start(cmd: list[str], port: int, tmp_path: Path, env: dict | None = None) -> subprocess.Popen:
    log = tmp_path / "proxy.log"
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_listening(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def upstream_identity(seen: dict) -> list[tuple[str, str]]:
    """Identity headers, in any spelling, that reached the upstream."""
    return [(k, v) for k, v in seen["headers"] if k.replace("_", "-") in IDENTITY]


def check_contract(port: int, r: Recorder, *, deny_status: dict[int, int]):
    """What every kit must do, seen from the client, hydra-authz and the upstream."""
    # Allowed, with a smuggled identity: the upstream sees hydra-authz's only.
    status, _, _ = raw_request(port, "POST", "/echo?x=1", [("Authorization", "Bearer t0k"), ("Cookie", "s=1"), *SMUGGLED],
                               body="hello")
    assert status == 200
    seen = r.upstream_seen[-1]
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/echo?x=1", "hello")
    assert sorted(upstream_identity(seen)) == sorted(ALLOW.items())
    # hydra-authz got the token and the cookie, and where the request went.
    auth = dict(r.auth_seen[-1]["headers"])
    assert auth["authorization"] == "Bearer t0k"
    assert auth["cookie"] == "s=1"
    if r.auth_seen[-1]["path"].startswith("/ext-authz"):
        assert (r.auth_seen[-1]["method"], r.auth_seen[-1]["path"]) == ("POST", "/ext-authz/echo?x=1")
    else:
        # The client's query string is in the URI header, not on the auth URI.
        assert r.auth_seen[-1]["path"] == "/forward-auth"
        assert (auth.get("x-forwarded-method") or auth.get("x-original-method")) == "POST"
        assert (auth.get("x-forwarded-uri") or auth.get("x-original-uri")) == "/echo?x=1"
        assert auth["x-forwarded-host"].split(":")[0] == "api.example.com"

    # Public route (allowed, no caller): no identity header at all upstream.
    status, _, _ = raw_request(port, "GET", "/public", SMUGGLED)
    assert status == 200
    assert upstream_identity(r.upstream_seen[-1]) == []

    # Denials: the status, and on 401/403 the RFC 6750 challenge, in a
    # problem+json answer that is not cached; the upstream is not called.
    for asked, expected in deny_status.items():
        before = len(r.upstream_seen)
        status, hdrs, body = raw_request(port, "GET", f"/deny/{asked}", [("Authorization", "Bearer t0k")])
        assert status == expected, (asked, status, body)
        assert len(r.upstream_seen) == before
        if asked in (401, 403):
            assert hdrs["www-authenticate"] == f'Bearer error="stand_in_{asked}"', hdrs
        if hdrs.get("content-length") != "0":
            assert hdrs["content-type"] == "application/problem+json", hdrs
            assert hdrs["cache-control"] == "no-store"
            assert json.loads(body)["status"] == expected


# ------------------------------------------------------------------ nginx


def nginx_conf(tmp_path: Path, proxy: int, upstream: int, authz: int) -> Path:
    text = NGINX_KIT.read_text()
    text = replace_once(text, f"127.0.0.1:{PROXY_PORT};", f"127.0.0.1:{proxy};")
    text = replace_once(text, f"127.0.0.1:{UPSTREAM_PORT};", f"127.0.0.1:{upstream};")
    text = replace_once(text, f"127.0.0.1:{FORWARD_AUTH_PORT};", f"127.0.0.1:{authz};")
    path = tmp_path / "nginx.conf"
    path.write_text(text)
    (tmp_path / "prefix").mkdir(exist_ok=True)
    return path


def nginx_cmd(nginx: Path, tmp_path: Path, conf: Path) -> list[str]:
    return [str(nginx), "-p", str(tmp_path / "prefix"), "-c", str(conf), "-e", "stderr"]


def test_nginx_has_auth_request():
    out = run([str(tool_or_skip("nginx")), "-V"])
    assert out.returncode == 0, out.stderr
    assert "--with-http_auth_request_module" in out.stderr


def test_nginx_checks_the_kit(tmp_path):
    nginx = tool_or_skip("nginx")
    conf = nginx_conf(tmp_path, free_port(), free_port(), free_port())
    out = run([*nginx_cmd(nginx, tmp_path, conf), "-t"])
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr
    # nginx really parses it: a misspelt directive fails the check.
    conf.write_text(replace_once(conf.read_text(), "auth_request /_authz;", "auth_requets /_authz;"))
    assert run([*nginx_cmd(nginx, tmp_path, conf), "-t"]).returncode != 0


def test_nginx_kit_settings():
    text = NGINX_KIT.read_text()
    for needle in ("auth_request /_authz;", "internal;", "proxy_pass http://hydra_authz/forward-auth;",
                   "proxy_pass_request_body off;", 'proxy_set_header Content-Length "";',
                   "proxy_set_header X-Original-Method $request_method;", "proxy_set_header X-Original-URI $request_uri;",
                   "proxy_set_header X-Forwarded-Host $host;", "proxy_set_header X-Forwarded-Proto $scheme;",
                   "underscores_in_headers off;", "ignore_invalid_headers on;", "daemon off;"):
        assert needle in text, needle
    for h in ("X-Client-Id", "X-Scopes", "X-Subject"):
        var = "$authz_" + h.lower().removeprefix("x-").replace("-", "_")
        assert f"auth_request_set {var} $upstream_http_{h.lower().replace('-', '_')};" in text
        assert f"proxy_set_header {h} {var};" in text
    # Never the client's own copy of the answer's headers.
    assert "proxy_pass_request_headers off" not in text


def test_nginx_kit_live(tmp_path, stand_ins):
    nginx = tool_or_skip("nginx")
    port = free_port()
    conf = nginx_conf(tmp_path, port, stand_ins.upstream_port, stand_ins.auth_port)
    proc = start(nginx_cmd(nginx, tmp_path, conf), port, tmp_path)
    try:
        # nginx keeps 401/403; hydra-authz's other answers would all be 500
        # for nginx, the kit's error page gives back 400/431/500/503.
        check_contract(port, stand_ins, deny_status={401: 401, 403: 403, 400: 400, 431: 431, 500: 500, 503: 503})
        # The auth subrequest is a GET without a body, whatever the method.
        assert stand_ins.auth_seen[0]["method"] == "GET"
    finally:
        stop(proc)


def test_nginx_denies_when_hydra_authz_is_down(tmp_path, stand_ins):
    nginx = tool_or_skip("nginx")
    port = free_port()
    conf = nginx_conf(tmp_path, port, stand_ins.upstream_port, free_port())
    proc = start(nginx_cmd(nginx, tmp_path, conf), port, tmp_path)
    try:
        status, hdrs, body = raw_request(port, "GET", "/date", [("Authorization", "Bearer t0k")])
        assert status == 503, body
        assert hdrs["content-type"] == "application/problem+json"
        assert stand_ins.upstream_seen == []
    finally:
        stop(proc)


# ------------------------------------------------------------------ Caddy


def caddy_env(tmp_path: Path) -> dict:
    # Caddy keeps autosave.json and its data under XDG dirs ($HOME otherwise).
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg-config"), XDG_DATA_HOME=str(tmp_path / "xdg-data"))
    return env


def caddyfile(tmp_path: Path, proxy: int, upstream: int, authz: int) -> Path:
    text = CADDY_KIT.read_text()
    text = replace_once(text, f"http://:{PROXY_PORT} ", f"http://:{proxy} ")
    text = replace_once(text, f"127.0.0.1:{UPSTREAM_PORT}", f"127.0.0.1:{upstream}")
    text = replace_once(text, f"127.0.0.1:{FORWARD_AUTH_PORT}", f"127.0.0.1:{authz}")
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    return path


def test_caddy_validates_the_kit(tmp_path):
    caddy = tool_or_skip("caddy")
    path = caddyfile(tmp_path, free_port(), free_port(), free_port())
    out = run([str(caddy), "validate", "--adapter", "caddyfile", "--config", str(path)], env=caddy_env(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    # The file is as `caddy fmt` writes it.
    out = run([str(caddy), "fmt", str(CADDY_KIT)])
    assert out.returncode == 0 and out.stdout == CADDY_KIT.read_text(), out.stderr


def test_caddy_adapted_config(tmp_path):
    """The JSON Caddy really runs: no admin API, no automatic HTTPS, a
    loopback listener, and the client's identity headers deleted before
    forward_auth."""
    caddy = tool_or_skip("caddy")
    out = run([str(caddy), "adapt", "--adapter", "caddyfile", "--config", str(CADDY_KIT)], env=caddy_env(tmp_path))
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["admin"]["disabled"] is True
    (server,) = cfg["apps"]["http"]["servers"].values()
    assert server["listen"] == [f"127.0.0.1:{PROXY_PORT}"]
    assert server["automatic_https"]["disable"] is True

    handlers = []

    def walk(node):
        if isinstance(node, dict):
            if "handler" in node:
                handlers.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(server["routes"])
    auth = [i for i, h in enumerate(handlers) if h["handler"] == "reverse_proxy"
            and h["upstreams"] == [{"dial": f"127.0.0.1:{FORWARD_AUTH_PORT}"}]]
    assert len(auth) == 1
    forward_auth = handlers[auth[0]]
    assert forward_auth["rewrite"] == {"method": "GET", "uri": "/forward-auth?"}
    deleted_before = {d.lower() for h in handlers[:auth[0]] if h["handler"] == "headers"
                      for d in h.get("request", {}).get("delete", [])}
    assert {"x-client-id", "x-scopes", "x-subject", "*_*"} <= deleted_before
    copied = forward_auth["handle_response"][0]["routes"]
    assert {k.lower() for r in copied for h in r["handle"] if h["handler"] == "headers"
            for k in h.get("request", {}).get("set", {})} == set(IDENTITY)


def test_caddy_kit_live(tmp_path, stand_ins):
    caddy = tool_or_skip("caddy")
    port = free_port()
    path = caddyfile(tmp_path, port, stand_ins.upstream_port, stand_ins.auth_port)
    proc = start([str(caddy), "run", "--adapter", "caddyfile", "--config", str(path)], port, tmp_path,
                 env=caddy_env(tmp_path))
    try:
        # Caddy hands every non-2xx answer back as is.
        check_contract(port, stand_ins, deny_status={401: 401, 403: 403, 400: 400, 431: 431, 500: 500, 503: 503})
        # A client's X-Original-* never reaches hydra-authz.
        raw_request(port, "GET", "/date", [("X-Original-URI", "/public"), ("X-Original-Method", "GET"),
                                           ("X-Forwarded-Uri", "/public"), ("X-Forwarded-Method", "GET")])
        auth = dict(stand_ins.auth_seen[-1]["headers"])
        assert "x-original-uri" not in auth and "x-original-method" not in auth
        assert (auth["x-forwarded-uri"], auth["x-forwarded-method"]) == ("/date", "GET")
    finally:
        stop(proc)


def test_caddy_denies_when_hydra_authz_is_down(tmp_path, stand_ins):
    caddy = tool_or_skip("caddy")
    port = free_port()
    path = caddyfile(tmp_path, port, stand_ins.upstream_port, free_port())
    proc = start([str(caddy), "run", "--adapter", "caddyfile", "--config", str(path)], port, tmp_path,
                 env=caddy_env(tmp_path))
    try:
        status, _, _ = raw_request(port, "GET", "/date", [("Authorization", "Bearer t0k")])
        assert status == 502
        assert stand_ins.upstream_seen == []
    finally:
        stop(proc)


# ------------------------------------------------------------------ Envoy (http_service)


HCM_FILTER = "envoy.filters.network.http_connection_manager"


def envoy_http_ext_authz() -> tuple[dict, list[dict], dict]:
    doc = load_yaml(ENVOY_HTTP_KIT)
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == HCM_FILTER
    return doc, hcm["typed_config"]["http_filters"], hcm["typed_config"]


def test_envoy_http_service_kit_fields():
    doc, filters, hcm = envoy_http_ext_authz()
    # The hygiene of envoy.yaml.
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    assert hcm["strip_any_host_port"] is True and hcm["strip_trailing_host_dot"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    names = [f["name"] for f in filters]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    removed = [m["remove"] for m in filters[0]["typed_config"]["mutations"]["request_mutations"]]
    assert sorted(removed) == sorted(IDENTITY)
    cfg = filters[1]["typed_config"]
    assert cfg["failure_mode_allow"] is False
    assert cfg["status_on_error"]["code"] == 503
    http = cfg["http_service"]
    assert http["path_prefix"] == "/ext-authz"
    assert http["server_uri"]["cluster"] == "hydra_authz_http"

    def exact(node):
        return [p["exact"] for p in node["patterns"] if "exact" in p]

    allowed = http["authorization_request"]["allowed_headers"]
    assert {"authorization", "cookie", "traceparent"} <= set(exact(allowed))
    # hydra-authz must see a method override to refuse it.
    assert set(METHOD_OVERRIDES) <= set(exact(allowed))
    # And every name with another separator (X.Client.Id, X+Client+Id,
    # which PHP and lighttpd read as X-Client-Id): one pattern, a full
    # match on a (lower-case) name with a byte other than a-z, 0-9, '-', '_'.
    regexes = [p["safe_regex"]["regex"] for p in allowed["patterns"] if "safe_regex" in p]
    assert len(regexes) == 1
    assert all(re.fullmatch(regexes[0], n) for n in ["x.client.id", "x-client.id", "x+client+id", "x~forwarded~host", "."])
    assert not any(re.fullmatch(regexes[0], n) for n in ["x-client-id", "x_client_id", "authorization", "x-request-id"])
    assert len(allowed["patterns"]) == len(exact(allowed)) + 1, "nothing else than exact names and the separator pattern"
    assert exact(http["authorization_response"]["allowed_upstream_headers"]) == list(IDENTITY)
    assert set(exact(http["authorization_response"]["allowed_client_headers"])) == {"www-authenticate", "content-type", "cache-control"}
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    ep = clusters["hydra_authz_http"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"]["port_value"] == FORWARD_AUTH_PORT


def envoy_or_skip() -> Path:
    envoy = find_envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary (scripts/test-deploy.sh installs the pinned one)")
    return envoy


def envoy_http_conf(tmp_path: Path, admin: int, proxy: int, upstream: int, authz: int) -> Path:
    text = ENVOY_HTTP_KIT.read_text()
    for old, new in ((9902, admin), (PROXY_PORT, proxy), (UPSTREAM_PORT, upstream), (FORWARD_AUTH_PORT, authz)):
        text = replace_once(text, f"port_value: {old}\n", f"port_value: {new}\n")
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    return path


def test_envoy_validates_the_http_service_kit(tmp_path):
    envoy = envoy_or_skip()
    out = run([str(envoy), "--mode", "validate", "-c", str(ENVOY_HTTP_KIT), "--log-level", "error"])
    assert out.returncode == 0, out.stderr + out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(replace_once(ENVOY_HTTP_KIT.read_text(), "path_prefix: /ext-authz", "path_prefix: ext-authz"))
    assert run([str(envoy), "--mode", "validate", "-c", str(bad), "--log-level", "error"]).returncode != 0


def test_envoy_http_service_kit_live(tmp_path, stand_ins):
    envoy = envoy_or_skip()
    port = free_port()
    conf = envoy_http_conf(tmp_path, free_port(), port, stand_ins.upstream_port, stand_ins.auth_port)
    proc = start([str(envoy), "-c", str(conf), "--log-level", "warn", "--disable-hot-restart"], port, tmp_path)
    try:
        # Underscore names are refused by Envoy itself.
        assert raw_request(port, "GET", "/date", [("x_client_id", "admin")])[0] == 400
        smuggled = [(k, v) for k, v in SMUGGLED if "_" not in k]
        status, _, _ = raw_request(port, "POST", "/echo?x=1", [("Authorization", "Bearer t0k"), ("Cookie", "s=1"), *smuggled],
                                   body="hello")
        assert status == 200
        assert sorted(upstream_identity(stand_ins.upstream_seen[-1])) == sorted(ALLOW.items())
        seen = stand_ins.auth_seen[-1]
        assert (seen["method"], seen["path"]) == ("POST", "/ext-authz/echo?x=1")
        auth = dict(seen["headers"])
        assert auth["authorization"] == "Bearer t0k" and auth["cookie"] == "s=1" and auth["host"] == "api.example.com"
        assert not [k for k in auth if k in IDENTITY]
        status, _, _ = raw_request(port, "GET", "/public", smuggled)
        assert status == 200 and upstream_identity(stand_ins.upstream_seen[-1]) == []
        for asked in (401, 403, 400, 431):
            status, hdrs, body = raw_request(port, "GET", f"/deny/{asked}", [])
            assert status == asked
            assert hdrs["content-type"] == "application/problem+json" and hdrs["cache-control"] == "no-store"
            assert json.loads(body)["status"] == asked
            if asked in (401, 403):
                assert hdrs["www-authenticate"] == f'Bearer error="stand_in_{asked}"'
        # A 5xx answer is an authz error for Envoy: status_on_error, no body.
        for asked in (500, 503):
            assert raw_request(port, "GET", f"/deny/{asked}", [])[0] == 503
    finally:
        stop(proc)


# ------------------------------------------------------------------ Istio (HTTP provider)

# Fields of Istio's EnvoyExternalAuthorizationHttpProvider (istio.mesh.v1alpha1).
HTTP_PROVIDER_FIELDS = {
    "service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError", "headersToUpstreamOnAllow",
    "headersToDownstreamOnDeny", "headersToDownstreamOnAllow", "includeRequestHeadersInCheck",
    "includeAdditionalHeadersInCheck", "includeRequestBodyInCheck", "clearRouteCache", "includeHeadersInCheck",
}


def istio_docs() -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all(ISTIO_HTTP_KIT.read_text()) if d]
    assert [d["kind"] for d in docs] == ["IstioOperator", "AuthorizationPolicy"]
    return docs[0], docs[1]


def test_istio_http_provider_fields():
    operator, policy = istio_docs()
    assert operator["apiVersion"] == "install.istio.io/v1alpha1"
    (provider,) = operator["spec"]["meshConfig"]["extensionProviders"]
    http = provider["envoyExtAuthzHttp"]
    assert set(http) <= HTTP_PROVIDER_FIELDS, set(http) - HTTP_PROVIDER_FIELDS
    assert http["port"] == FORWARD_AUTH_PORT
    assert http["pathPrefix"] == "/ext-authz"
    assert http["failOpen"] is False and http["statusOnError"] == "503"
    assert http["service"] == "hydra-authz.hydra-authz.svc.cluster.local"
    assert {"authorization", "cookie", "traceparent"} <= set(http["includeRequestHeadersInCheck"])
    assert set(METHOD_OVERRIDES) <= set(http["includeRequestHeadersInCheck"])
    assert http["headersToUpstreamOnAllow"] == list(IDENTITY)
    assert set(http["headersToDownstreamOnDeny"]) == {"www-authenticate", "content-type", "cache-control"}
    chart_values = load_yaml(REPO / "deploy" / "helm" / "hydra-authz" / "values.yaml")
    assert float(http["timeout"].removesuffix("s")) > chart_values["config"]["introspection"]["timeout_ms"] / 1000
    # The policy sends requests to this provider.
    spec = policy["spec"]
    assert spec["action"] == "CUSTOM" and spec["provider"]["name"] == provider["name"]
    assert spec["rules"] and spec["selector"]["matchLabels"]
    assert spec["rules"] == [{}], "every request, no path left to the caller's own headers"


def test_istio_http_policy_matches_istio_crd_schema():
    _, policy = istio_docs()
    model = istio_security_v1.AuthorizationPolicy.model_validate(policy)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == policy


# ------------------------------------------------------------------ Traefik (shape only)


def test_traefik_dynamic_config_shape():
    doc = load_yaml(TRAEFIK_KIT)
    http = doc["http"]
    assert set(http) == {"routers", "middlewares", "services"}
    (router,) = http["routers"].values()
    middlewares = http["middlewares"]
    assert router["middlewares"][-1] in middlewares and router["service"] in http["services"]
    fa = middlewares[router["middlewares"][-1]]["forwardAuth"]
    assert fa["address"] == f"http://127.0.0.1:{FORWARD_AUTH_PORT}/forward-auth"
    assert fa["trustForwardHeader"] is False
    assert {h.lower() for h in fa["authResponseHeaders"]} == set(IDENTITY)
    # Every request header reaches hydra-authz (no allow-list): it refuses a
    # method override naming another method and a dotted spelling of an
    # identity header, in spellings no list could name.
    assert "authRequestHeaders" not in fa
    # Underscore twins are removed (empty value) before forwardAuth.
    (strip,) = router["middlewares"][:-1]
    removed = middlewares[strip]["headers"]["customRequestHeaders"]
    assert set(removed.values()) == {""}
    # Every underscore spelling of the identity and method-override headers
    # (Traefik passes `_` names on; CGI/WSGI/PHP read them as the dashed one).
    wanted = {"x_client_id", "x_client-id", "x-client_id", "x_scopes", "x_subject"}
    for name in METHOD_OVERRIDES:
        wanted |= underscore_spellings(name)
    # Forwarded facts Traefik's entry point leaves (it strips its own list of
    # X-Forwarded-* and X-Real-Ip) and the request-URI headers frameworks route on.
    wanted |= {"forwarded", "x-original-uri", "x-original-method", "x-original-url", "x-rewrite-url"}
    wanted |= underscore_spellings("x-forwarded-host")
    # Scheme headers frameworks trust that are not in the entry point's list.
    wanted |= {"x-forwarded-ssl", "x-forwarded-scheme", "front-end-https", "x-url-scheme"}
    assert {k.lower() for k in removed} == wanted
    (server,) = http["services"][router["service"]]["loadBalancer"]["servers"]
    assert server["url"] == f"http://127.0.0.1:{UPSTREAM_PORT}"


# ------------------------------------------------------------------ kit hygiene


@pytest.mark.parametrize("kit,ports", [
    (NGINX_KIT, (PROXY_PORT, UPSTREAM_PORT, FORWARD_AUTH_PORT)),
    (CADDY_KIT, (PROXY_PORT, UPSTREAM_PORT, FORWARD_AUTH_PORT)),
    (TRAEFIK_KIT, (UPSTREAM_PORT, FORWARD_AUTH_PORT)),
    (ENVOY_HTTP_KIT, (PROXY_PORT, UPSTREAM_PORT, FORWARD_AUTH_PORT, 9902)),
], ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else "")
def test_each_port_appears_once_outside_comments(kit, ports):
    lines = [line.split("#", 1)[0] for line in kit.read_text().splitlines()]
    text = "\n".join(lines)
    for port in ports:
        assert text.count(str(port)) == 1, (kit.name, port)


def test_install_proxies_usage():
    script = REPO / "scripts" / "install-proxies.sh"
    out = run([str(script)])
    assert out.returncode == 2 and "nginx|caddy" in out.stderr and out.stdout == ""
