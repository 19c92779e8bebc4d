"""A small live stack on loopback for the deploy tests that need traffic:
a Hydra-shaped introspection server, a trivial upstream, hydra-authz (the
built binary) and the real Envoy in front of it.

Everything binds 127.0.0.1 on free ports; every wait is bounded in time;
every process started here is stopped by `Stack.close()` (by its own pid).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe, timeout: float = 30.0, interval: float = 0.1, proc: subprocess.Popen | None = None,
               log: Path | None = None):
    """Call `probe` until it returns a truthy value (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            got = probe()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tail}")
        time.sleep(interval)


def http_status(url: str, timeout: float = 5.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def request(method: str, url: str, token: str | None = None, timeout: float = 5.0) -> int:
    """Status of one request (no redirects followed; 4xx/5xx are answers too)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    req = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


class FakeHydra:
    """Hydra's admin introspection endpoint (RFC 7662), shaped like Hydra v2:
    POST /admin/oauth2/introspect with a form `token=...`.

    Tokens in `scopes` are active with those scopes (client_id = the token's
    name before the first "-"); any other token is `{"active": false}`.
    `outage = True` makes it answer 500, `delay` (s) makes it slow.
    """

    def __init__(self, scopes: dict[str, str]):
        self.scopes = dict(scopes)
        self.outage = False
        self.delay = 0.0
        self.calls = 0
        hydra = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                hydra.calls += 1
                if hydra.delay:
                    time.sleep(hydra.delay)
                if self.path != "/admin/oauth2/introspect":
                    return self.answer(404, {"error": "not_found"})
                if hydra.outage:
                    return self.answer(500, {"error": "server_error"})
                token = (form.get("token") or [""])[0]
                scope = hydra.scopes.get(token)
                if scope is None:
                    return self.answer(200, {"active": False})
                client = token.split("-", 1)[0]
                return self.answer(200, {
                    "active": True, "client_id": client, "sub": client, "scope": scope,
                    "exp": int(time.time()) + 3600, "iat": int(time.time()), "token_use": "access_token",
                })

            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/admin/oauth2/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Upstream:
    """The protected application: 200 "ok" to every method and path."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = do_DELETE = reply

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def hydra_authz_toml(*, grpc_port: int, http_port: int, introspection_url: str, rules: str = "",
                     resilience: str = "", cache: bool = False) -> str:
    """A hydra-authz config for the tests (the binary's defaults elsewhere)."""
    return f"""
[server]
grpc_addr = "127.0.0.1:{grpc_port}"
http_addr = "127.0.0.1:{http_port}"
shutdown_delay_ms = 0
drain_timeout_ms = 2000

[introspection]
url = "{introspection_url}"
timeout_ms = 800

[introspection.auth]
kind = "none"

[introspection.cache]
enabled = {"true" if cache else "false"}
ttl_ms = 30000

[introspection.resilience]
{resilience}

[log]
format = "json"
level = "warn"

{rules}
"""


def rewrite_ports(text: str, mapping: dict[int, int]) -> str:
    """The kits' ports each appear once, on a `port_value:` line."""
    for old, new in mapping.items():
        needle = f"port_value: {old}\n"
        assert text.count(needle) == 1, needle
        text = text.replace(needle, f"port_value: {new}\n")
    return text


class Stack:
    """Processes started for one test; close() stops each by its pid."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen, object]] = []
        self.servers: list = []

    def spawn(self, name: str, cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log_path = self.tmp / f"{name}.log"
        log = open(log_path, "w+")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env if env is not None else os.environ.copy(), cwd=self.tmp)
        self.procs.append((proc, log))
        return proc, log_path

    def hydra_authz(self, binary: Path, config_text: str) -> tuple[subprocess.Popen, Path, Path]:
        """Start hydra-authz; returns (process, config path, log path) once /readyz is 200."""
        cfg = self.tmp / "hydra-authz.toml"
        cfg.write_text(config_text)
        # Nothing from the environment may reconfigure it (HYDRA_AUTHZ_* are config overrides).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_AUTHZ_", "OTEL_"))}
        proc, log = self.spawn("hydra-authz", [str(binary), "--config", str(cfg)], env=env)
        http = next(line.split('"')[1] for line in config_text.splitlines() if line.startswith("http_addr"))
        wait_until("hydra-authz /readyz", lambda: http_status(f"http://{http}/readyz", timeout=1) == 200,
                   proc=proc, log=log)
        return proc, cfg, log

    def envoy(self, envoy: Path, bootstrap: str, admin_port: int) -> subprocess.Popen:
        path = self.tmp / "envoy.yaml"
        path.write_text(bootstrap)
        proc, log = self.spawn("envoy", [str(envoy), "-c", str(path), "--log-level", "warn", "--disable-hot-restart"])
        wait_until("envoy /ready", lambda: http_status(f"http://127.0.0.1:{admin_port}/ready", timeout=1) == 200,
                   proc=proc, log=log)
        return proc

    def close(self):
        for proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.close()
        for s in reversed(self.servers):
            s.close()
