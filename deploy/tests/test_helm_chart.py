"""The Helm chart deploy/helm/hydra-authz, checked with Helm v4's own engine
(helm-python-sdk: lint, values.schema.json, rendering) and the Kubernetes
OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    Rendered,
    admin_existing_secret_values,
    all_on_values,
    deep_merge,
    existing_secret_env_values,
    find_hydra_authz_binary,
    forward_auth_values,
    tls_from_secrets_values,
    load_yaml,
    render,
    run,
)

# Kubernetes versions the rendered manifests are validated against: the
# chart's minimum (Chart.yaml kubeVersion) and the newest schema
# kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]

# Kinds with no schema in kubernetes-validate (CRDs): skipped there, and
# validated against the CRD's own schema (models generated from the Prometheus
# Operator CRDs) in test_crd_kinds_match_their_crd_schema. Any other kind
# without a schema fails the test.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

WARNING = 2  # lint severities: 1 info, 2 warning, 3 error


def cluster_values() -> dict:
    """Fleet mode at its simplest: a plaintext in-cluster Redis (the Bitnami
    chart's Service and Secret key), the chart's defaults otherwise."""
    return {"cluster": {"enabled": True, "redisUrl": "redis://redis-master.redis.svc.cluster.local:6379/0",
                        "existingSecret": "hydra-authz-cluster"}}


def cluster_public_ca_values() -> dict:
    """rediss:// to a Redis with a publicly trusted certificate (no
    cluster.tls: system roots), with the shared cache."""
    return {
        "config": {"introspection": {"cache": {"enabled": True}}},
        "cluster": {"enabled": True, "redisUrl": "rediss://redis.example.com:6380", "existingSecret": "hydra-authz-cluster",
                    "sharedCache": True},
    }


# The fleet-mode renders, checked like conftest's VARIANTS (schema, Kubernetes
# schemas, port names, `config check`).
CLUSTER_VARIANTS: dict[str, Any] = {"cluster": cluster_values, "cluster-public-ca": cluster_public_ca_values}
ALL_VARIANTS: dict[str, Any] = {**VARIANTS, **CLUSTER_VARIANTS}


def chart_min_kube_version() -> str:
    m = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+(-0)?", load_yaml(CHART / "Chart.yaml")["kubeVersion"])
    assert m, "Chart.yaml kubeVersion must be a plain lower bound"
    return m.group(1)


# --------------------------------------------------------------------- lint


@pytest.mark.parametrize("values_name", ["default", "all-on"])
def test_helm_lint_is_clean(values_name):
    values = VARIANTS[values_name]()
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{chart_min_kube_version()}.0", namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    serious = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert serious == [], serious


def test_helm_lint_reports_a_broken_template(tmp_path):
    """The lint test above can fail: a template with a syntax error is reported."""
    broken = tmp_path / "hydra-authz"
    shutil.copytree(CHART, broken)
    svc = broken / "templates" / "service.yaml"
    svc.write_text(svc.read_text() + "\n{{- if .Values.service.type }}\n")  # unclosed action
    report = helm.lint(str(broken), strict=True)
    assert report["errors"] or any(m["severity"] >= WARNING for m in report["messages"]), report


def test_chart_metadata():
    meta = load_yaml(CHART / "Chart.yaml")
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "hydra-authz"
    assert meta["type"] == "application"
    cargo = (CHART.parents[2] / "Cargo.toml").read_text()
    cargo_version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    assert meta["appVersion"] == cargo_version, "appVersion should follow Cargo.toml's package version"


# ------------------------------------------------------------------- render


def test_default_render_kinds(default_render: Rendered):
    assert default_render.kinds() == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}


def test_all_on_render_kinds(all_on_render: Rendered):
    assert all_on_render.kinds() == {
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "NetworkPolicy",
    }


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", sorted(ALL_VARIANTS))
def test_manifests_match_kubernetes_schemas(variant, k8s_version):
    rendered = render(ALL_VARIANTS[variant]())
    validated, skipped = [], []
    for doc in rendered.docs:
        key = (doc["apiVersion"], doc["kind"])
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
            validated.append(key)
        except kubernetes_validate.SchemaNotFoundError:
            assert key in CRD_KINDS, f"no Kubernetes schema for {key} and it is not a known CRD kind"
            skipped.append(key)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {k8s_version}: "
                        f"{e.message} at {'.'.join(map(str, e.path))}")
    assert ("apps/v1", "Deployment") in validated
    assert all(k in CRD_KINDS for k in skipped)


def test_kubernetes_validation_rejects_bad_manifests(default_render: Rendered):
    """kubernetes-validate is really checking: an unknown field and a wrong
    type in the rendered Deployment are both rejected."""
    import copy

    bad = copy.deepcopy(default_render.deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = copy.deepcopy(default_render.deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9191"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_crd_kinds_match_their_crd_schema(all_on_render: Rendered):
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1
    from pydantic import ValidationError

    sm = all_on_render.one("ServiceMonitor")
    assert (sm["apiVersion"], sm["kind"]) in CRD_KINDS
    model = prometheus_operator_v1.ServiceMonitor.model_validate(sm)
    # The models ignore unknown fields (as the API server prunes them): a
    # lossless round trip proves every rendered field is in the CRD schema.
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == sm
    bad = {**sm, "spec": {**sm["spec"], "endpoints": [{**sm["spec"]["endpoints"][0], "scheme": "ftp"}]}}
    with pytest.raises(ValidationError):
        prometheus_operator_v1.ServiceMonitor.model_validate(bad)
    svc = all_on_render.service
    # Selects our Service and scrapes the named HTTP port at /metrics.
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][k] == v
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "http-admin"
    assert ep["path"] == "/metrics"
    assert ep["interval"] == "15s" and ep["scrapeTimeout"] == "5s"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# ----------------------------------------------------- security and probes


def assert_hardened(r: Rendered):
    pod_sc = r.pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = r.container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged", False) is False
    assert r.pod_spec["automountServiceAccountToken"] is False
    # A Service named hydra-authz would otherwise inject HYDRA_AUTHZ_* variables.
    assert r.pod_spec["enableServiceLinks"] is False


def test_security_context_default(default_render: Rendered):
    assert_hardened(default_render)


def test_security_context_all_on(all_on_render: Rendered):
    assert_hardened(all_on_render)


def test_http_probes_by_default(default_render: Rendered):
    c = default_render.container
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["periodSeconds"] > 0 and c[probe]["timeoutSeconds"] > 0


def test_grpc_probes_option():
    # all-on turns serverTls on, which rules gRPC probes out (see below): the
    # option is checked on its own variant, which is also schema-validated.
    c = render(VARIANTS["grpc-probes-min-available"]()).container
    assert c["livenessProbe"]["grpc"] == {"port": 9191, "service": ""}
    assert c["readinessProbe"]["grpc"] == {"port": 9191, "service": "envoy.service.auth.v3.Authorization"}
    assert "httpGet" not in c["livenessProbe"]


@pytest.mark.parametrize("variant", ["all-on", "tls-from-secrets"])
def test_http_probes_with_server_tls(variant):
    """With TLS on the gRPC port, probes use the plaintext HTTP listener:
    kubelet gRPC probes cannot speak TLS. test_server_tls_config_starts shows
    /healthz and /readyz really answer over plain HTTP with TLS on."""
    r = render(VARIANTS[variant]())
    cfg = parse_toml(r)
    assert cfg["server"]["tls"]["cert_file"], "server TLS is on in this variant"
    assert cfg["server"]["http_addr"] == "0.0.0.0:9192"
    c = r.container
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert "grpc" not in c["livenessProbe"] and "grpc" not in c["readinessProbe"]


def test_grpc_probes_refused_with_server_tls():
    with pytest.raises(helm.HelmRenderError, match="probes.type=grpc cannot be used with TLS"):
        render({"probes": {"type": "grpc"}, "serverTls": {"existingSecret": "hydra-authz-grpc-tls"}})


def test_resources_set(default_render: Rendered):
    res = default_render.container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]


# --------------------------------------------------------------- ports


@pytest.mark.parametrize("variant", ["default", "all-on", "admin-existing-secret", "forward-auth"])
def test_ports_named_for_istio(variant):
    r = render(VARIANTS[variant]())
    svc = r.service
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    forward_auth = VARIANTS[variant]().get("forwardAuth", {}).get("enabled", False)
    # The admin API is never in the Service Envoy / Istio call; the
    # forward-auth front door is, when on.
    assert set(ports) == {"grpc-authz", "http-admin"} | ({"http-forward-auth"} if forward_auth else set())
    assert ports["grpc-authz"]["port"] == 9191 and ports["grpc-authz"]["targetPort"] == "grpc-authz"
    assert ports["http-admin"]["port"] == 9192 and ports["http-admin"]["targetPort"] == "http-admin"
    assert ports["grpc-authz"]["appProtocol"] == "grpc"
    cports = {p["name"]: p["containerPort"] for p in r.container["ports"]}
    admin = {"admin": 9193} if VARIANTS[variant]().get("admin", {}).get("enabled") else {}
    fwd = {"forward-auth": 9194} if forward_auth else {}
    assert cports == {"grpc-authz": 9191, "http-admin": 9192, **admin, **fwd}
    if forward_auth:
        assert ports["http-forward-auth"]["port"] == 9194 and ports["http-forward-auth"]["targetPort"] == "forward-auth"
        assert ports["http-forward-auth"]["appProtocol"] == "http"
    # The Service selects the Deployment's pods.
    labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert r.deployment["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


# Kubernetes' IANA_SVC_NAME (validation.IsValidPortName): what a container
# port name, and a Service targetPort / NetworkPolicy port given by name, must
# be. The OpenAPI schemas kubernetes-validate checks do not say so; the API
# server refuses anything else.
IANA_SVC_NAME = re.compile(r"(?=.{1,15}$)(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize("variant", sorted(ALL_VARIANTS))
def test_port_names_resolve_to_valid_container_ports(variant):
    """Every container port name is a valid IANA_SVC_NAME (at most 15
    characters: so the forward-auth container port is "forward-auth", its
    Service port "http-forward-auth"), and every port a Service or the
    NetworkPolicy names is one of the pod's container ports."""
    r = render(ALL_VARIANTS[variant]())
    cports = {p["name"] for p in r.container["ports"]}
    assert len(cports) == len(r.container["ports"]), "container port names must be unique"
    bad = [n for n in cports if not IANA_SVC_NAME.fullmatch(n)]
    assert bad == [], f"invalid container port names {bad}"
    named = [p["targetPort"] for d in r.docs if d["kind"] == "Service" for p in d["spec"]["ports"]]
    if np := r.maybe("NetworkPolicy"):
        named += [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
    assert named and all(isinstance(n, str) for n in named)
    assert set(named) <= cports, f"{set(named) - cports} name no container port"


def test_port_name_check_catches_a_long_name():
    """The regular expression above really refuses what the API server does."""
    assert IANA_SVC_NAME.fullmatch("forward-auth")
    for bad in ("http-forward-auth", "Forward-auth", "forward--auth", "-fwd", "9194", ""):
        assert not IANA_SVC_NAME.fullmatch(bad), bad


# ------------------------------------------------- config map and checksum


def parse_toml(r: Rendered) -> dict:
    return tomllib.loads(r.toml_text)


def mounted_file(r: Rendered, path: str) -> tuple[str, str, str]:
    """Where a file the config names comes from: (secret | configMap, object
    name, key). Fails unless exactly one read-only mount holds the path and
    exactly one Secret / ConfigMap item lands on it."""
    mounts = [m for m in r.container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path}: expected one mount, got {mounts}"
    (mount,) = mounts
    assert mount.get("readOnly") is True, f"{path}: mount {mount['name']} is not read-only"
    rel = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    volume = {v["name"]: v for v in r.pod_spec["volumes"]}[mount["name"]]
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    found = []
    for source in sources:
        for kind in ("secret", "configMap"):
            if kind in source:
                obj = source[kind]
                name = obj.get("name") or obj.get("secretName")
                found += [(kind, name, item["key"]) for item in obj.get("items", []) if item["path"] == rel]
    assert len(found) == 1, f"{path}: expected one Secret/ConfigMap item at {rel!r} in volume {mount['name']}, got {found}"
    mode = volume.get("projected", volume.get("secret", {})).get("defaultMode")
    assert mode is not None and mode & 0o007 == 0, f"{path}: files must not be world-readable (defaultMode {mode!r})"
    return found[0]


# hydra-authz's own defaults (src/config.rs Default impls) for the sections
# added to the chart later; test_chart_defaults_match_hydra_authz checks the
# whole values.yaml config against the binary as well.
DEFAULT_CACHE = {"enabled": False, "ttl_ms": 30000, "negative_ttl_ms": 0, "max_entries": 100000, "stale_if_error_ms": 0}
DEFAULT_JWT = {
    "jwks_url": "",
    "algorithms": ["RS256", "ES256", "EdDSA"],
    "refresh_min_interval_ms": 30000,
    "max_key_age_ms": 300000,
    "max_stale_key_age_ms": 3600000,
    "verified_ttl_ms": 60000,
    "access_token_types": ["at+jwt", "application/at+jwt", "JWT"],
    "access_token_claims": ["client_id", "scp", "scope"],
    "id_token_claims": ["nonce", "at_hash", "c_hash"],
}
DEFAULT_RESILIENCE = {
    "max_retries": 2,
    "retry_budget_ms": 900,
    "breaker_failures": 20,
    "breaker_cooldown_ms": 2000,
    "max_concurrent": 256,
    "max_waiting": 1024,
}
# The contract of [server.limits] (hydra-authz's defaults).
DEFAULT_LIMITS = {
    "max_connections": 4096,
    "http_max_connections_per_peer": 128,
    "header_read_timeout_ms": 5000,
    "idle_timeout_ms": 60000,
    "grpc_max_concurrent_streams": 1024,
    "grpc_keepalive_interval_ms": 30000,
    "grpc_keepalive_timeout_ms": 10000,
    "grpc_max_connection_age_ms": 600000,
}
SERVER_TLS_DIR = "/etc/hydra-authz-tls/server"
ADMIN_TLS_DIR = "/etc/hydra-authz-tls/admin"
ADMIN_TOKEN_FILE = "/var/run/secrets/hydra-authz-admin/token"
INTROSPECTION_TLS_DIR = "/etc/hydra-authz-tls/introspection"
CLUSTER_SECRET_DIR = "/var/run/secrets/hydra-authz-cluster"
CLUSTER_TLS_DIR = "/etc/hydra-authz-tls/redis"
# The contract of [cluster] (hydra-authz's defaults, src/authn/fleet/config.rs)
# for the values the chart renders whatever is set.
DEFAULT_CLUSTER = {"key_prefix": "hydra-authz", "shared_cache": False, "timeout_ms": 100, "health_interval_ms": 1000}


def test_configmap_toml_default(default_render: Rendered):
    cfg = parse_toml(default_render)
    assert cfg["server"]["grpc_addr"] == "0.0.0.0:9191"
    assert cfg["server"]["http_addr"] == "0.0.0.0:9192"
    assert cfg["introspection"]["url"].endswith("/admin/oauth2/introspect")
    assert cfg["introspection"]["auth"] == {"kind": "none"}
    # Protocol and service name left to OTEL_* (and their defaults) unless set.
    assert cfg["telemetry"] == {
        "otlp_endpoint": "",
        "propagators": ["tracecontext", "baggage"],
    }
    assert cfg["introspection"]["mode"] == "introspect"
    assert cfg["introspection"]["cache"] == DEFAULT_CACHE, "the cache is opt-in"
    assert cfg["introspection"]["jwt"] == DEFAULT_JWT
    assert cfg["introspection"]["resilience"] == DEFAULT_RESILIENCE
    # The admin API is off: no admin listener configured, no admin port.
    assert not [k for k in cfg["server"] if k.startswith("admin_")]
    assert "admin" not in {p["name"] for p in default_render.container["ports"]}
    # Connection limits: hydra-authz's defaults, rendered.
    assert cfg["server"]["limits"] == DEFAULT_LIMITS
    # No TLS unless asked for: no [server.tls] / [introspection.tls], nothing mounted.
    assert "tls" not in cfg["server"] and "tls" not in cfg["introspection"]
    assert not {"server-tls", "introspection-tls"} & {v["name"] for v in default_render.pod_spec["volumes"]}
    # The seed rules are the default example.
    assert cfg["rules"] == [
        {"id": "read-date", "methods": ["GET"], "path": "/date", "scopes": ["read_date"]},
        {"id": "post-echo", "methods": ["POST"], "path": "/echo", "scopes": ["post_echo"]},
    ]
    # Only keys the binary knows (README's table + [telemetry]); unknown keys are start-up errors.
    known = {
        "server": {"grpc_addr", "http_addr", "worker_threads", "shutdown_delay_ms", "drain_timeout_ms", "tls", "limits",
                   "admin_addr", "admin_token_file", "admin_token_env", "admin_client_ca_file"},
        "introspection": {"url", "timeout_ms", "leeway_s", "allowed_issuers", "required_audience", "max_response_bytes", "auth",
                          "mode", "cache", "jwt", "resilience", "tls"},
        "headers": {"client_id", "scopes", "subject", "strip_authorization"},
        "authorization": {"scope_strategy", "realm"},
        "log": {"format", "level"},
        "telemetry": {"otlp_endpoint", "otlp_protocol", "service_name", "propagators"},
    }
    assert set(cfg) == set(known) | {"rules"}
    for section, keys in known.items():
        assert set(cfg[section]) <= keys, section


def test_configmap_toml_all_on(all_on_render: Rendered):
    values = all_on_values()
    cfg = parse_toml(all_on_render)
    assert cfg["server"]["grpc_addr"] == "0.0.0.0:9191"
    assert cfg["server"]["http_addr"] == "0.0.0.0:9192"
    assert cfg["server"]["drain_timeout_ms"] == 15000
    intro = values["config"]["introspection"]
    for k in ("url", "timeout_ms", "leeway_s", "allowed_issuers", "required_audience", "max_response_bytes"):
        assert cfg["introspection"][k] == intro[k], k
    assert cfg["headers"] == values["config"]["headers"]
    assert cfg["authorization"] == values["config"]["authorization"]
    assert cfg["log"] == values["config"]["log"]
    assert cfg["telemetry"] == values["config"]["telemetry"]
    assert cfg["rules"] == values["config"]["rules"]
    # bearer + chart-created Secret mounted as a file: token_file points into the mount.
    sec = values["introspectionSecret"]
    assert cfg["introspection"]["auth"] == {"kind": "bearer", "token_file": f"{sec['mountPath']}/{sec['key']}"}
    mounts = {m["name"]: m for m in all_on_render.container["volumeMounts"]}
    assert mounts["introspection-credential"]["mountPath"] == sec["mountPath"]
    assert mounts["introspection-credential"]["readOnly"] is True
    vols = {v["name"]: v for v in all_on_render.pod_spec["volumes"]}
    secret = all_on_render.named("Secret", RELEASE)
    assert vols["introspection-credential"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"][sec["key"]]).decode() == sec["value"]
    # The credential never lands in the ConfigMap.
    assert sec["value"] not in all_on_render.toml_text
    assert mounted_file(all_on_render, cfg["introspection"]["auth"]["token_file"]) == ("secret", secret["metadata"]["name"], sec["key"])


def test_configmap_toml_all_on_new_sections(all_on_render: Rendered):
    """Verification mode, cache, JWT, resilience, propagators and both TLS
    directions: every value reaches the TOML, and every TLS path the config
    names is a read-only mount of exactly the Secret / ConfigMap key given."""
    values = all_on_values()
    cfg = parse_toml(all_on_render)
    intro = values["config"]["introspection"]
    assert cfg["introspection"]["mode"] == intro["mode"] == "auto"
    assert cfg["introspection"]["cache"] == intro["cache"]
    assert cfg["introspection"]["cache"]["enabled"] is True
    assert cfg["introspection"]["jwt"] == intro["jwt"]
    assert cfg["introspection"]["resilience"] == intro["resilience"]
    assert cfg["telemetry"]["propagators"] == values["config"]["telemetry"]["propagators"] == ["tracecontext", "baggage", "b3"]
    # Every key of the new sections is set (not left to a default) in all-on.
    for section, default in (("cache", DEFAULT_CACHE), ("jwt", DEFAULT_JWT), ("resilience", DEFAULT_RESILIENCE)):
        assert set(intro[section]) == set(default), section
        assert all(intro[section][k] != v for k, v in default.items()), f"all-on should change every {section} default"

    stls, itls = values["serverTls"], values["introspectionTls"]
    assert set(stls) == set(load_yaml(CHART / "values.yaml")["serverTls"])
    assert set(itls) == set(load_yaml(CHART / "values.yaml")["introspectionTls"])
    assert cfg["server"]["tls"] == {
        "cert_file": f"{SERVER_TLS_DIR}/tls.crt",
        "key_file": f"{SERVER_TLS_DIR}/tls.key",
        "client_ca_file": f"{SERVER_TLS_DIR}/client-ca.crt",
    }
    t = cfg["server"]["tls"]
    assert mounted_file(all_on_render, t["cert_file"]) == ("secret", stls["existingSecret"], stls["certKey"])
    assert mounted_file(all_on_render, t["key_file"]) == ("secret", stls["existingSecret"], stls["keyKey"])
    assert mounted_file(all_on_render, t["client_ca_file"]) == ("configMap", stls["existingConfigMap"], stls["clientCaKey"])
    assert cfg["introspection"]["tls"] == {
        "ca_file": f"{INTROSPECTION_TLS_DIR}/ca.crt",
        "client_cert_file": f"{INTROSPECTION_TLS_DIR}/tls.crt",
        "client_key_file": f"{INTROSPECTION_TLS_DIR}/tls.key",
    }
    t = cfg["introspection"]["tls"]
    assert mounted_file(all_on_render, t["ca_file"]) == ("configMap", itls["existingConfigMap"], itls["caKey"])
    assert mounted_file(all_on_render, t["client_cert_file"]) == ("secret", itls["existingSecret"], itls["clientCertKey"])
    assert mounted_file(all_on_render, t["client_key_file"]) == ("secret", itls["existingSecret"], itls["clientKeyKey"])
    # The chart creates no TLS objects: they are existing ones (cert-manager, trust-manager).
    assert all_on_render.kinds() == {
        "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy",
    }
    assert sorted(s["metadata"]["name"] for s in all_on_render.docs if s["kind"] == "Secret") == ["hydra-authz", "hydra-authz-admin"]
    assert "TLS + client certificates (mTLS)" in all_on_render.notes


def test_tls_from_one_cert_manager_secret():
    """serverTls with the standard kubernetes.io/tls keys (tls.crt, tls.key,
    ca.crt) of one Secret; introspectionTls with only a CA bundle."""
    values = tls_from_secrets_values()
    r = render(values)
    cfg = parse_toml(r)
    name = values["serverTls"]["existingSecret"]
    assert cfg["server"]["tls"] == {
        "cert_file": f"{SERVER_TLS_DIR}/tls.crt",
        "key_file": f"{SERVER_TLS_DIR}/tls.key",
        "client_ca_file": f"{SERVER_TLS_DIR}/client-ca.crt",
    }
    assert [mounted_file(r, p) for p in cfg["server"]["tls"].values()] == [
        ("secret", name, "tls.crt"),
        ("secret", name, "tls.key"),
        ("secret", name, "ca.crt"),
    ]
    # A CA to trust, no client certificate.
    assert cfg["introspection"]["tls"] == {"ca_file": f"{INTROSPECTION_TLS_DIR}/ca.crt"}
    assert mounted_file(r, cfg["introspection"]["tls"]["ca_file"]) == ("secret", "hydra-private-ca", "ca.crt")
    # Server TLS without clientCaKey: TLS, but no client certificate required.
    r = render({"serverTls": {"existingSecret": name}})
    cfg = parse_toml(r)
    assert cfg["server"]["tls"] == {"cert_file": f"{SERVER_TLS_DIR}/tls.crt", "key_file": f"{SERVER_TLS_DIR}/tls.key"}
    assert "tls" not in cfg["introspection"]
    assert "introspection-tls" not in {v["name"] for v in r.pod_spec["volumes"]}
    # Turning TLS on is a config change: the pods roll.
    assert checksum(r) != checksum(render())


@pytest.mark.parametrize(
    "values, message",
    [
        ({"serverTls": {"clientCaKey": "ca.crt"}}, "need serverTls.existingSecret"),
        ({"serverTls": {"existingSecret": "s", "existingConfigMap": "ca"}}, "set serverTls.clientCaKey"),
        ({"serverTls": {"existingSecret": "s", "keyKey": ""}}, "certKey and keyKey are required"),
        ({"introspectionTls": {"existingSecret": "s", "clientCertKey": "tls.crt"}}, "clientCertKey and clientKeyKey go together"),
        ({"introspectionTls": {"existingConfigMap": "ca", "caKey": "ca.crt", "clientCertKey": "tls.crt", "clientKeyKey": "tls.key"}},
         "need introspectionTls.existingSecret"),
        ({"introspectionTls": {"caKey": "ca.crt"}}, "caKey needs"),
        ({"introspectionTls": {"existingConfigMap": "ca"}}, "set introspectionTls.caKey"),
        ({"introspectionTls": {"existingSecret": "s"}}, "nothing is read from it"),
    ],
)
def test_inconsistent_tls_values_fail(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_existing_secret_as_env():
    r = render(existing_secret_env_values())
    cfg = parse_toml(r)
    assert cfg["introspection"]["auth"] == {
        "kind": "client_secret_basic",
        "client_id": "hydra-authz",
        "client_secret_env": "INTROSPECTION_CREDENTIAL",
    }
    env = r.env()["INTROSPECTION_CREDENTIAL"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "hydra-authz-introspection", "key": "client-secret"}
    assert r.maybe("Secret") is None, "existingSecret: the chart must not create a Secret"
    assert "introspection-credential" not in {v["name"] for v in r.pod_spec["volumes"]}


def test_credential_required_for_bearer():
    with pytest.raises(helm.HelmRenderError, match="needs a credential"):
        render({"config": {"introspection": {"auth": {"kind": "bearer"}}}})


# ------------------------------------------------- limits and the admin API


def test_server_limits_rendered(all_on_render: Rendered):
    assert load_yaml(CHART / "values.yaml")["config"]["server"]["limits"] == DEFAULT_LIMITS
    limits = all_on_values()["config"]["server"]["limits"]
    assert set(limits) == set(DEFAULT_LIMITS)
    assert all(limits[k] != v for k, v in DEFAULT_LIMITS.items()), "all-on should change every limit"
    assert parse_toml(all_on_render)["server"]["limits"] == limits
    # A limit is a config change: the pods roll.
    assert checksum(render({"config": {"server": {"limits": {"max_connections": 10}}}})) != checksum(render())


def admin_rules(r: Rendered) -> list[dict]:
    np = r.one("NetworkPolicy")
    return [rule for rule in np["spec"]["ingress"] if any(p["port"] == "admin" for p in rule["ports"])]


def test_admin_off_by_default(default_render: Rendered):
    assert load_yaml(CHART / "values.yaml")["admin"]["enabled"] is False
    cfg = parse_toml(default_render)
    assert not [k for k in cfg["server"] if k.startswith("admin_")]
    assert "admin" not in {p["name"] for p in default_render.container["ports"]}
    assert not {"admin-token", "admin-client-ca"} & {v["name"] for v in default_render.pod_spec["volumes"]}
    assert [s["metadata"]["name"] for s in default_render.docs if s["kind"] == "Service"] == [RELEASE]
    assert "Admin API" not in default_render.notes
    # admin.* other than enabled changes nothing while the API is off.
    r = render({"networkPolicy": {"enabled": True}, "admin": {"token": "t" * 16, "allowedFrom": [{"podSelector": {}}]}})
    assert admin_rules(r) == []
    assert r.maybe("Secret") is None
    assert not [k for k in parse_toml(r)["server"] if k.startswith("admin_")]


def test_admin_all_on(all_on_render: Rendered):
    """Bearer token (chart-created Secret) and mTLS, own ClusterIP Service,
    NetworkPolicy naming only admin.allowedFrom."""
    admin = all_on_values()["admin"]
    r = all_on_render
    server = parse_toml(r)["server"]
    assert server["admin_addr"] == "0.0.0.0:9193"
    assert len({server["admin_addr"], server["grpc_addr"], server["http_addr"]}) == 3
    assert {p["name"]: p["containerPort"] for p in r.container["ports"]}["admin"] == 9193
    # The token: a file from the chart's own Secret, never in the ConfigMap or the pod spec.
    assert server["admin_token_file"] == ADMIN_TOKEN_FILE
    secret = r.named("Secret", f"{RELEASE}-admin")
    assert mounted_file(r, ADMIN_TOKEN_FILE) == ("secret", secret["metadata"]["name"], admin["tokenKey"])
    assert base64.b64decode(secret["data"][admin["tokenKey"]]).decode() == admin["token"]
    assert admin["token"] not in r.toml_text
    assert admin["token"] not in yaml.safe_dump(r.deployment)
    assert "admin_token_env" not in server
    # mTLS: the CA of admin clients, mounted read-only from its own Secret.
    assert server["admin_client_ca_file"] == f"{ADMIN_TLS_DIR}/client-ca.crt"
    assert mounted_file(r, server["admin_client_ca_file"]) == ("secret", admin["clientCaSecret"], admin["clientCaKey"])
    # Not the CA of Envoy's client certificates (the Check port's mTLS).
    assert mounted_file(r, server["tls"]["client_ca_file"]) != mounted_file(r, server["admin_client_ca_file"])
    # Its own Service, cluster-internal, never the one Envoy / Istio call.
    svc = r.named("Service", f"{RELEASE}-admin")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "grpc-admin", "port": admin["service"]["port"], "targetPort": "admin", "protocol": "TCP", "appProtocol": "grpc"}
    ]
    assert svc["spec"]["selector"] == r.service["spec"]["selector"]
    assert "admin" not in {p["targetPort"] for p in r.service["spec"]["ports"]}
    # NetworkPolicy: only the named peers.
    (rule,) = admin_rules(r)
    assert rule["from"] == admin["allowedFrom"]
    # Rotating the chart-created token rolls the pods.
    annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
    rotated = render(deep_merge(all_on_values(), {"admin": {"token": "rotated-admin-token"}}))
    assert rotated.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/admin-secret"] != annotations["checksum/admin-secret"]
    assert f"{RELEASE}-admin.{NAMESPACE}.svc.cluster.local:{admin['service']['port']}" in r.notes


def test_admin_existing_secret_only():
    """Bearer token from an existing Secret, no mTLS, no Service, and a
    NetworkPolicy with no rule for the admin port: nobody may connect."""
    values = admin_existing_secret_values()
    r = render(values)
    server = parse_toml(r)["server"]
    assert server["admin_addr"] == "0.0.0.0:9193"
    assert server["admin_token_file"] == ADMIN_TOKEN_FILE
    assert "admin_client_ca_file" not in server
    assert mounted_file(r, ADMIN_TOKEN_FILE) == ("secret", values["admin"]["existingSecret"], values["admin"]["tokenKey"])
    assert r.maybe("Secret") is None, "existingSecret: the chart must not create a Secret"
    assert "checksum/admin-secret" not in r.deployment["spec"]["template"]["metadata"]["annotations"]
    assert [s["metadata"]["name"] for s in r.docs if s["kind"] == "Service"] == [RELEASE]
    assert admin_rules(r) == []
    assert "port-forward deploy/hydra-authz 9193:9193" in r.notes
    # Without serverTls the admin token would cross the pod network in clear.
    assert "the admin API serves without TLS" in r.notes
    with_tls = render(deep_merge(values, {"serverTls": {"existingSecret": "hydra-authz-grpc-tls"}}))
    assert "the admin API serves without TLS" not in with_tls.notes


def test_admin_mtls_only():
    r = render({"serverTls": {"existingSecret": "hydra-authz-grpc-tls"}, "admin": {"enabled": True, "clientCaSecret": "ops-ca"}})
    server = parse_toml(r)["server"]
    assert "admin_token_file" not in server
    assert mounted_file(r, server["admin_client_ca_file"]) == ("secret", "ops-ca", "ca.crt")
    assert "admin-token" not in {v["name"] for v in r.pod_spec["volumes"]}


def test_admin_service_is_cluster_internal_whatever_service_type():
    r = render({"service": {"type": "LoadBalancer"},
                "admin": {"enabled": True, "existingSecret": "hydra-authz-admin", "plaintext": True,
                          "service": {"enabled": True}}})
    assert r.service["spec"]["type"] == "LoadBalancer"
    assert r.named("Service", f"{RELEASE}-admin")["spec"]["type"] == "ClusterIP"
    assert {p["name"] for p in r.service["spec"]["ports"]} == {"grpc-authz", "http-admin"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"admin": {"enabled": True}}, "admin.enabled needs credentials"),
        ({"admin": {"enabled": True, "token": "t" * 16, "existingSecret": "s"}}, "admin.existingSecret or admin.token, not both"),
        ({"admin": {"enabled": True, "clientCaSecret": "ca"}}, "admin.clientCaSecret (mTLS) needs serverTls.existingSecret"),
        # A bearer token in clear text: TLS, or an explicit plaintext.
        ({"admin": {"enabled": True, "token": "t" * 16}}, "admin: a bearer token over plain gRPC"),
        ({"admin": {"enabled": True, "existingSecret": "s"}}, "admin: a bearer token over plain gRPC"),
        ({"admin": {"service": {"enabled": True}}}, "admin.service.enabled needs admin.enabled"),
        ({"config": {"server": {"limits": {"idle_timeout_ms": 40000}}}}, "idle_timeout_ms must exceed"),
    ],
)
def test_inconsistent_admin_values_fail(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# ------------------------------------------------ the forward-auth front door


FORWARD_AUTH_TRUSTED_PROXIES_MESSAGE = "forwardAuth.enabled needs forwardAuth.trustedProxies"


def forward_auth_rules(r: Rendered) -> list[dict]:
    np = r.one("NetworkPolicy")
    return [rule for rule in np["spec"]["ingress"] if any(p["port"] == "forward-auth" for p in rule["ports"])]


def test_forward_auth_off_by_default(default_render: Rendered):
    fa = load_yaml(CHART / "values.yaml")["forwardAuth"]
    assert fa["enabled"] is False
    assert fa["trustedProxies"] == [], "no default may trust the cluster network"
    assert (fa["port"], fa["envoyPathPrefix"]) == (9194, "/ext-authz")
    assert "forward_auth" not in parse_toml(default_render)
    assert "[forward_auth]" not in default_render.toml_text
    assert "forward-auth" not in {p["name"] for p in default_render.container["ports"]}
    assert 9194 not in {p["containerPort"] for p in default_render.container["ports"]}
    assert {p["name"] for p in default_render.service["spec"]["ports"]} == {"grpc-authz", "http-admin"}
    assert 9194 not in {p["port"] for p in default_render.service["spec"]["ports"]}
    assert "Forward auth" not in default_render.notes
    # forwardAuth.* other than enabled changes nothing while it is off.
    r = render({"networkPolicy": {"enabled": True},
                "forwardAuth": {"trustedProxies": ["10.0.0.0/8"], "networkPolicyFrom": [{"podSelector": {}}]}})
    assert forward_auth_rules(r) == []
    assert "forward_auth" not in parse_toml(r)
    assert checksum(r) == checksum(default_render)


def test_forward_auth_enabled():
    values = forward_auth_values()
    r = render(values)
    cfg = parse_toml(r)
    assert cfg["forward_auth"] == {
        "addr": "0.0.0.0:9194",
        "trusted_proxies": ["10.0.0.0/8", "fd00:10::/64"],
        "envoy_path_prefix": "/ext-authz",
    }
    # Its own listener, apart from the others.
    assert len({cfg["forward_auth"]["addr"], cfg["server"]["grpc_addr"], cfg["server"]["http_addr"]}) == 3
    cports = [p for p in r.container["ports"] if p["name"] == "forward-auth"]
    assert cports == [{"name": "forward-auth", "containerPort": 9194, "protocol": "TCP"}]
    sports = [p for p in r.service["spec"]["ports"] if p["name"] == "http-forward-auth"]
    assert sports == [
        {"name": "http-forward-auth", "port": 9194, "targetPort": "forward-auth", "protocol": "TCP", "appProtocol": "http"}
    ]
    # The other ports are untouched.
    assert {p["name"]: p["port"] for p in r.service["spec"]["ports"]} == {"grpc-authz": 9191, "http-admin": 9192, "http-forward-auth": 9194}
    # NetworkPolicy: a rule for the port; no networkPolicyFrom = anyone
    # (peers outside trusted_proxies still get 400 from hydra-authz).
    (rule,) = forward_auth_rules(r)
    assert rule == {"ports": [{"port": "forward-auth", "protocol": "TCP"}]}
    # Turning it on is a config change: the pods roll.
    assert checksum(r) != checksum(render())
    assert "http://hydra-authz.hydra-authz.svc.cluster.local:9194/forward-auth" in r.notes
    assert "pathPrefix: /ext-authz" in r.notes
    assert "10.0.0.0/8, fd00:10::/64" in r.notes


def test_forward_auth_custom_port_prefix_and_peers():
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}]
    r = render({
        "forwardAuth": {"enabled": True, "port": 19194, "trustedProxies": ["192.168.0.0/16"],
                        "envoyPathPrefix": "/authz/check", "networkPolicyFrom": peers},
        "networkPolicy": {"enabled": True},
    })
    assert parse_toml(r)["forward_auth"] == {
        "addr": "0.0.0.0:19194",
        "trusted_proxies": ["192.168.0.0/16"],
        "envoy_path_prefix": "/authz/check",
    }
    assert {p["name"]: p["containerPort"] for p in r.container["ports"]}["forward-auth"] == 19194
    assert {p["name"]: p["port"] for p in r.service["spec"]["ports"]}["http-forward-auth"] == 19194
    (rule,) = forward_auth_rules(r)
    assert rule["from"] == peers
    assert "pathPrefix: /authz/check" in r.notes


def test_forward_auth_all_on(all_on_render: Rendered):
    fa = all_on_values()["forwardAuth"]
    assert fa["enabled"] is True and fa["trustedProxies"] == ["10.0.0.0/8"]
    assert parse_toml(all_on_render)["forward_auth"] == {
        "addr": f"0.0.0.0:{fa['port']}",
        "trusted_proxies": fa["trustedProxies"],
        "envoy_path_prefix": fa["envoyPathPrefix"],
    }
    (rule,) = forward_auth_rules(all_on_render)
    assert rule["from"] == fa["networkPolicyFrom"]
    # Both the admin API and the forward-auth port: numbered NOTES sections.
    assert "5. Forward auth over HTTP" in all_on_render.notes
    # The port is plain HTTP on the pod network: the NOTES say what that means.
    assert "plain HTTP and every caller's bearer token crosses it" in all_on_render.notes
    assert "must clear Authorization themselves" in all_on_render.notes


def test_istio_http_provider_calls_the_forward_auth_port():
    """deploy/istio/ext-authz-http-provider.yaml points at the Service port
    and prefix the chart renders with forwardAuth on."""
    operator = next(d for d in yaml.safe_load_all((CHART.parents[1] / "istio" / "ext-authz-http-provider.yaml").read_text()) if d)
    (provider,) = [p["envoyExtAuthzHttp"] for p in operator["spec"]["meshConfig"]["extensionProviders"] if "envoyExtAuthzHttp" in p]
    r = render(forward_auth_values())
    svc = r.service
    assert provider["service"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    port = {p["name"]: p["port"] for p in svc["spec"]["ports"]}["http-forward-auth"]
    assert provider["port"] == port
    assert provider["pathPrefix"] == parse_toml(r)["forward_auth"]["envoy_path_prefix"]
    assert provider["failOpen"] is False


@pytest.mark.parametrize(
    "values, message",
    [
        ({"forwardAuth": {"enabled": True}}, FORWARD_AUTH_TRUSTED_PROXIES_MESSAGE),
        ({"forwardAuth": {"enabled": True, "trustedProxies": []}, "networkPolicy": {"enabled": True}},
         FORWARD_AUTH_TRUSTED_PROXIES_MESSAGE),
        ({"forwardAuth": {"enabled": True, "trustedProxies": ["10.0.0.0/8"], "port": 9191}}, "forwardAuth.port 9191 is already used"),
        ({"forwardAuth": {"enabled": True, "trustedProxies": ["10.0.0.0/8"], "port": 9193}}, "forwardAuth.port 9193 is already used"),
        ({"forwardAuth": {"enabled": True, "trustedProxies": ["10.0.0.0/8"], "port": 19192}, "service": {"httpPort": 19192}},
         "forwardAuth.port 19192 is already used by service.httpPort"),
    ],
)
def test_inconsistent_forward_auth_values_fail(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_forward_auth_without_trusted_proxies_names_the_value():
    """The message tells the user what to set, not just that something failed."""
    with pytest.raises(helm.HelmRenderError) as e:
        render({"forwardAuth": {"enabled": True}})
    assert "forwardAuth.trustedProxies" in str(e.value)
    assert "ingress controller" in str(e.value)


# ------------------------------------------------------ fleet mode (Redis)


def cluster_secret_files(r: Rendered) -> dict[str, tuple[str, str, str]]:
    """Every file [cluster] names -> (secret | configMap, object, key), each
    checked to be exactly one read-only mount (mounted_file)."""
    return {k: mounted_file(r, v) for k, v in parse_toml(r)["cluster"].items() if k.endswith("_file")}


def assert_no_inlined_cluster_secrets(r: Rendered):
    """The Redis password and the cluster secret reach the pod only as files
    from a Secret: [cluster] names paths into the read-only Secret mount,
    never values, the URL carries no password, and no env var is fed from
    the cluster Secret."""
    cluster = parse_toml(r)["cluster"]
    assert not {"password", "secret", "password_env", "secret_env"} & set(cluster), cluster
    assert not re.match(r"rediss?://[^/?#@]*:[^/?#@]*@", cluster["redis_url"]), cluster["redis_url"]
    for key in ("password_file", "secret_file"):
        if key in cluster:
            assert cluster[key].startswith(CLUSTER_SECRET_DIR + "/")
            assert mounted_file(r, cluster[key])[0] == "secret"
    secret_names = {v["secret"]["secretName"] for v in r.pod_spec["volumes"] if v["name"].startswith("cluster-")}
    assert secret_names
    from_env = [e["name"] for e in r.container.get("env", []) if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") in secret_names]
    assert from_env == [], f"cluster secrets in env vars: {from_env}"


def test_cluster_off_by_default(default_render: Rendered):
    values = load_yaml(CHART / "values.yaml")["cluster"]
    assert values["enabled"] is False and values["sharedCache"] is False and values["tls"]["enabled"] is False
    assert (values["keyPrefix"], values["timeoutMs"], values["healthIntervalMs"]) == (
        DEFAULT_CLUSTER["key_prefix"], DEFAULT_CLUSTER["timeout_ms"], DEFAULT_CLUSTER["health_interval_ms"])
    assert "cluster" not in parse_toml(default_render)
    assert "[cluster]" not in default_render.toml_text
    assert not {"cluster-secret", "cluster-tls"} & {v["name"] for v in default_render.pod_spec["volumes"]}
    assert "Fleet mode" not in default_render.notes
    # cluster.* other than enabled changes nothing while it is off, and is not
    # checked (sharedCache without a secret, tls without a Secret).
    r = render({"cluster": {"redisUrl": "redis://r:6379", "existingSecret": "s", "sharedCache": True, "keyPrefix": "other",
                            "tls": {"enabled": True}}})
    assert "cluster" not in parse_toml(r)
    assert checksum(r) == checksum(default_render)
    assert r.pod_spec["volumes"] == default_render.pod_spec["volumes"]


def test_cluster_enabled():
    """The simplest fleet: [cluster] with the Redis URL and both secrets as
    read-only files from the one existing Secret, the defaults otherwise."""
    values = cluster_values()
    r = render(values)
    cfg = parse_toml(r)
    assert cfg["cluster"] == {
        "redis_url": values["cluster"]["redisUrl"],
        "password_file": f"{CLUSTER_SECRET_DIR}/redis-password",
        "secret_file": f"{CLUSTER_SECRET_DIR}/cluster-secret",
        **DEFAULT_CLUSTER,
    }
    assert cluster_secret_files(r) == {
        "password_file": ("secret", "hydra-authz-cluster", "redis-password"),
        "secret_file": ("secret", "hydra-authz-cluster", "cluster-secret"),
    }
    assert_no_inlined_cluster_secrets(r)
    # A plaintext Redis: no TLS files, no TLS volume.
    assert not [k for k in cfg["cluster"] if k.startswith("tls_")]
    assert "cluster-tls" not in {v["name"] for v in r.pod_spec["volumes"]}
    # The Secret is the user's: the chart creates none.
    assert r.maybe("Secret") is None
    # The introspection cache is untouched; turning fleet mode on rolls the pods.
    assert cfg["introspection"]["cache"] == DEFAULT_CACHE
    assert checksum(r) != checksum(render())
    assert "Fleet mode: Redis redis://redis-master.redis.svc.cluster.local:6379/0 (key prefix hydra-authz): purges reach every pod." in r.notes
    assert "networkPolicy.egress is on" not in r.notes


def test_cluster_all_on(all_on_render: Rendered):
    """rediss:// with a private CA and client certificates, an ACL user, the
    shared cache, non-default key names: every value reaches [cluster], every
    file is a read-only mount of exactly the Secret key given."""
    values = all_on_values()
    cl = values["cluster"]
    defaults = load_yaml(CHART / "values.yaml")["cluster"]
    assert set(cl) == set(defaults) and set(cl["tls"]) == set(defaults["tls"])
    assert all(cl[k] != v for k, v in defaults.items()), "all-on should change every cluster default"
    r = all_on_render
    cfg = parse_toml(r)
    assert cfg["cluster"] == {
        "redis_url": cl["redisUrl"],
        "username": cl["username"],
        "password_file": f"{CLUSTER_SECRET_DIR}/redis-password",
        "secret_file": f"{CLUSTER_SECRET_DIR}/cluster-secret",
        "tls_ca_file": f"{CLUSTER_TLS_DIR}/ca.crt",
        "tls_cert_file": f"{CLUSTER_TLS_DIR}/tls.crt",
        "tls_key_file": f"{CLUSTER_TLS_DIR}/tls.key",
        "key_prefix": cl["keyPrefix"],
        "shared_cache": True,
        "timeout_ms": cl["timeoutMs"],
        "health_interval_ms": cl["healthIntervalMs"],
    }
    tls = cl["tls"]
    assert cluster_secret_files(r) == {
        "password_file": ("secret", cl["existingSecret"], cl["passwordKey"]),
        "secret_file": ("secret", cl["existingSecret"], cl["clusterSecretKey"]),
        "tls_ca_file": ("secret", tls["existingSecret"], tls["caKey"]),
        "tls_cert_file": ("secret", tls["existingSecret"], tls["certKey"]),
        "tls_key_file": ("secret", tls["existingSecret"], tls["keyKey"]),
    }
    assert_no_inlined_cluster_secrets(r)
    # The shared cache sits behind the pod's own cache, which is on here.
    assert cfg["introspection"]["cache"]["enabled"] is True
    # No chart-created Secret for the cluster: only the introspection and admin ones.
    assert sorted(s["metadata"]["name"] for s in r.docs if s["kind"] == "Secret") == ["hydra-authz", "hydra-authz-admin"]
    assert "verified tokens are shared (L2)" in r.notes
    # Egress is locked down in all-on: the NOTES say Redis needs a rule (all-on has one).
    assert "networkPolicy.egress is on: allow the Redis port" in r.notes
    assert any(p.get("port") == 6380 for rule in r.one("NetworkPolicy")["spec"]["egress"] for p in rule.get("ports", []))
    stale = values["config"]["introspection"]["cache"]["stale_if_error_ms"]
    assert f"cache on: revocation can lag up to 15000 ms, stale-if-error: tokens verified in the last {stale} ms stay allowed" in r.notes


def test_cluster_rediss_with_a_public_ca():
    """rediss:// without cluster.tls is allowed: the system roots verify a
    publicly trusted Redis certificate, and nothing TLS is mounted."""
    r = render(cluster_public_ca_values())
    cluster = parse_toml(r)["cluster"]
    assert cluster["redis_url"].startswith("rediss://")
    assert cluster["shared_cache"] is True
    assert not [k for k in cluster if k.startswith("tls_")]
    assert "cluster-tls" not in {v["name"] for v in r.pod_spec["volumes"]}
    assert cluster_secret_files(r) == {
        "password_file": ("secret", "hydra-authz-cluster", "redis-password"),
        "secret_file": ("secret", "hydra-authz-cluster", "cluster-secret"),
    }


@pytest.mark.parametrize(
    "extra, files",
    [
        # A Redis without AUTH: only the cluster secret is read.
        ({"passwordKey": ""}, {"secret_file": ("secret", "s", "cluster-secret")}),
        # A private CA only.
        ({"redisUrl": "rediss://r:6380", "tls": {"enabled": True, "existingSecret": "redis-ca"}},
         {"password_file": ("secret", "s", "redis-password"), "secret_file": ("secret", "s", "cluster-secret"),
          "tls_ca_file": ("secret", "redis-ca", "ca.crt")}),
        # A client certificate only (public CA): a cert-manager kubernetes.io/tls Secret.
        ({"redisUrl": "rediss://r:6380", "tls": {"enabled": True, "existingSecret": "redis-client", "caKey": "",
                                                   "certKey": "tls.crt", "keyKey": "tls.key"}},
         {"password_file": ("secret", "s", "redis-password"), "secret_file": ("secret", "s", "cluster-secret"),
          "tls_cert_file": ("secret", "redis-client", "tls.crt"), "tls_key_file": ("secret", "redis-client", "tls.key")}),
    ],
)
def test_cluster_secret_and_tls_options(extra, files):
    r = render({"cluster": deep_merge({"enabled": True, "redisUrl": "redis://r:6379", "existingSecret": "s"}, extra)})
    assert cluster_secret_files(r) == files
    # The TOML names exactly those files, and the volumes hold exactly those items.
    items = [item["key"] for v in r.pod_spec["volumes"] if v["name"].startswith("cluster-") for item in v["secret"]["items"]]
    assert sorted(items) == sorted(key for _, _, key in files.values())
    assert_no_inlined_cluster_secrets(r)


def test_cluster_username_and_prefix():
    r = render({"cluster": {"enabled": True, "redisUrl": "redis://r:6379", "existingSecret": "s", "username": "hydra-authz-acl",
                            "keyPrefix": "team-a/prod"}})
    cluster = parse_toml(r)["cluster"]
    assert cluster["username"] == "hydra-authz-acl"
    assert cluster["key_prefix"] == "team-a/prod"
    assert "(key prefix team-a/prod)" in r.notes


CLUSTER_SECRET_MESSAGE = "cluster.enabled needs cluster.existingSecret"
CLUSTER_SHARED_CACHE_SECRET_MESSAGE = "cluster.sharedCache needs cluster.existingSecret"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"cluster": {"enabled": True, "redisUrl": "redis://r:6379"}}, CLUSTER_SECRET_MESSAGE),
        ({"config": {"introspection": {"cache": {"enabled": True}}},
          "cluster": {"enabled": True, "redisUrl": "redis://r:6379", "sharedCache": True}}, CLUSTER_SHARED_CACHE_SECRET_MESSAGE),
        ({"config": {"introspection": {"cache": {"enabled": True}}},
          "cluster": {"enabled": True, "redisUrl": "redis://r:6379", "sharedCache": True, "existingSecret": "s", "clusterSecretKey": ""}},
         "cluster.enabled needs cluster.clusterSecretKey"),
        # The cluster secret is needed without the shared cache too (it seals purge messages).
        ({"cluster": {"enabled": True, "redisUrl": "redis://r:6379", "existingSecret": "s", "clusterSecretKey": ""}},
         "cluster.enabled needs cluster.clusterSecretKey"),
        ({"cluster": {"enabled": True, "redisUrl": "redis://r:6379", "sharedCache": True, "existingSecret": "s"}},
         "cluster.sharedCache needs config.introspection.cache.enabled"),
        ({"cluster": {"enabled": True, "redisUrl": "redis://r:6379", "existingSecret": "s", "passwordKey": "", "clusterSecretKey": ""}},
         "cluster.existingSecret is set but nothing is read from it"),
        ({"cluster": {"enabled": True, "redisUrl": "rediss://r:6380", "existingSecret": "s", "tls": {"enabled": True}}},
         "cluster.tls.enabled needs cluster.tls.existingSecret"),
        ({"cluster": {"enabled": True, "redisUrl": "redis://r:6379", "existingSecret": "s",
                      "tls": {"enabled": True, "existingSecret": "redis-ca"}}},
         "cluster.tls.enabled needs a rediss:// cluster.redisUrl"),
        ({"cluster": {"enabled": True, "redisUrl": "rediss://r:6380", "existingSecret": "s",
                      "tls": {"enabled": True, "existingSecret": "t", "certKey": "tls.crt"}}},
         "cluster.tls: certKey and keyKey go together"),
        ({"cluster": {"enabled": True, "redisUrl": "rediss://r:6380", "existingSecret": "s",
                      "tls": {"enabled": True, "existingSecret": "t", "caKey": ""}}},
         "cluster.tls.existingSecret is set but nothing is read from it"),
    ],
)
def test_inconsistent_cluster_values_fail(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_cluster_secret_messages_name_the_values():
    """The messages tell the user what to set, not just that something failed."""
    with pytest.raises(helm.HelmRenderError) as e:
        render({"cluster": {"enabled": True, "redisUrl": "redis://r:6379"}})
    assert all(v in str(e.value) for v in ("cluster.existingSecret", "cluster.passwordKey", "cluster.clusterSecretKey"))
    with pytest.raises(helm.HelmRenderError) as e:
        render({"config": {"introspection": {"cache": {"enabled": True}}},
                "cluster": {"enabled": True, "redisUrl": "redis://r:6379", "sharedCache": True}})
    assert "cluster.clusterSecretKey" in str(e.value) and "32 bytes" in str(e.value)


@pytest.mark.parametrize(
    "url", ["", "redis://:hunter2@redis:6379/0", "rediss://hydra-authz:hunter2@redis:6380", "http://redis:6379"]
)
def test_cluster_redis_url_refused_by_the_schema(url):
    """A missing or non-Redis URL, or one with a password (which would land in
    the ConfigMap), is refused before any template runs."""
    with pytest.raises(helm.HelmValuesError, match="/cluster/redisUrl"):
        render({"cluster": {"enabled": True, "redisUrl": url, "existingSecret": "s"}})


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis://:hunter2@redis:6379/0", "cluster.redisUrl must not contain a password"),
        ("rediss://hydra-authz:hunter2@redis:6380", "cluster.redisUrl must not contain a password"),
        ("", "cluster.enabled needs cluster.redisUrl"),
    ],
)
def test_cluster_redis_url_refused_without_the_schema(tmp_path, url, message):
    """Even with schema validation skipped (helm --skip-schema-validation),
    the templates refuse a password in the URL: it would be in the ConfigMap."""
    chart_dir = tmp_path / "hydra-authz"
    shutil.copytree(CHART, chart_dir)
    (chart_dir / "values.schema.json").unlink()
    with helm.Chart.load(str(chart_dir)) as chart:
        with pytest.raises(helm.HelmRenderError, match=re.escape(message)) as e:
            chart.render({"cluster": {"enabled": True, "redisUrl": url, "existingSecret": "s"}}, name=RELEASE, namespace=NAMESPACE)
    assert "hunter2" not in str(e.value)


def test_values_schema_rejects_unknown_and_bad_values():
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        chart.validate_schema(all_on_values())
        for variant in ALL_VARIANTS.values():
            chart.validate_schema(variant())
        chart.validate_schema({"config": {"introspection": {"mode": "jwt", "jwt": {"jwks_url": "https://h/.well-known/jwks.json"}}}})
        chart.validate_schema({"forwardAuth": {"enabled": True, "trustedProxies": ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8", "::1/128"],
                                               "envoyPathPrefix": "/authz/check"}})
        for url in ("redis://r:6379/0", "rediss://r", "redis://[fd00::1]:6379", "redis://acl-user@r:6379/0", "redis://r/0?a=b:c@d"):
            chart.validate_schema({"cluster": {"enabled": True, "redisUrl": url}})
        chart.validate_schema({"cluster": {"keyPrefix": "team-a/prod_1.v2", "passwordKey": "", "clusterSecretKey": ""}})
        chart.validate_schema({"config": {"introspection": {"cache": {"stale_if_error_ms": 3600000}}}})
        bad = [
            {"config": {"introspection": {"urll": "http://x"}}},  # typo: the binary would refuse it
            {"config": {"authorization": {"scope_strategy": "regex"}}},
            {"config": {"telemetry": {"otlp_protocol": "http/json"}}},
            {"config": {"rules": [{"id": "x", "path": "no-slash"}]}},
            {"probes": {"type": "exec"}},
            {"introspectionSecret": {"envName": "HYDRA_AUTHZ_TOKEN"}},  # would be read as a config key
            {"config": {"introspection": {"mode": "hybrid"}}},
            {"config": {"introspection": {"mode": "jwt"}}},  # no jwks_url
            {"config": {"introspection": {"mode": "auto", "jwt": {"jwks_url": "https://h/jwks.json", "algorithms": []}}}},
            {"config": {"introspection": {"jwt": {"algorithms": ["HS256"]}}}},  # no shared-secret JWTs
            {"config": {"introspection": {"jwt": {"jwks_url": "ftp://h/jwks.json"}}}},
            {"config": {"introspection": {"cache": {"enabled": True, "ttl_ms": 0}}}},
            {"config": {"introspection": {"cache": {"max_entries": 0}}}},
            {"config": {"introspection": {"cache": {"enabled": "yes"}}}},
            {"config": {"introspection": {"resilience": {"max_concurrent": 0}}}},
            {"config": {"introspection": {"resilience": {"retries": 3}}}},
            {"config": {"introspection": {"tls": {"ca_file": "/x"}}}},  # paths come from introspectionTls
            {"config": {"server": {"tls": {"cert_file": "/x"}}}},  # paths come from serverTls
            {"config": {"telemetry": {"propagators": ["jaeger"]}}},
            {"serverTls": {"existingSecret": "Not_A_Name"}},
            {"serverTls": {"certKey": "../tls.crt"}},
            {"introspectionTls": {"caFile": "/x"}},
            {"replicaCount": "2"},
            {"unknownTopLevel": True},
            {"config": {"server": {"limits": {"max_connections": 0}}}},
            {"config": {"server": {"limits": {"header_read_timeout_ms": "5s"}}}},
            {"config": {"server": {"limits": {"read_timeout_ms": 1}}}},
            {"config": {"server": {"admin_addr": "0.0.0.0:9193"}}},  # the chart sets it from admin.enabled
            {"config": {"server": {"admin_token_file": "/x"}}},  # paths come from admin.*
            {"admin": {"enabled": "yes"}},
            {"admin": {"tokn": "x"}},
            {"admin": {"existingSecret": "Not_A_Name"}},
            {"admin": {"clientCaKey": "../ca.crt"}},
            {"admin": {"token": "has a space"}},
            {"admin": {"token": "short-password"}},  # hydra-authz wants at least 16 bytes
            {"admin": {"allowedFrom": {"podSelector": {}}}},
            {"admin": {"service": {"port": 0}}},
            {"admin": {"service": {"type": "LoadBalancer"}}},  # always ClusterIP
            {"forwardAuth": {"enabled": "yes"}},
            {"forwardAuth": {"trustedProxy": ["10.0.0.0/8"]}},
            {"forwardAuth": {"trustedProxies": "10.0.0.0/8"}},
            {"forwardAuth": {"trustedProxies": ["10.0.0.1"]}},  # no prefix length
            {"forwardAuth": {"trustedProxies": ["ingress-nginx"]}},
            {"forwardAuth": {"port": 80}},  # privileged: every capability is dropped
            {"forwardAuth": {"port": 70000}},
            {"forwardAuth": {"envoyPathPrefix": "ext-authz"}},
            {"forwardAuth": {"envoyPathPrefix": "/ext-authz/"}},
            {"forwardAuth": {"envoyPathPrefix": "/"}},
            {"forwardAuth": {"envoyPathPrefix": "/forward-auth"}},  # the nginx / Caddy / Traefik endpoint
            {"forwardAuth": {"networkPolicyFrom": {"podSelector": {}}}},
            {"config": {"forward_auth": {"addr": "0.0.0.0:9194"}}},  # the chart sets it from forwardAuth.*
            {"config": {"introspection": {"cache": {"stale_if_error_ms": -1}}}},
            {"config": {"introspection": {"cache": {"stale_if_error_ms": "60s"}}}},
            {"config": {"introspection": {"cache": {"stale_if_error_ms": 3600001}}}},  # hydra-authz: at most one hour
            {"config": {"introspection": {"cache": {"staleIfErrorMs": 1000}}}},  # config.* are the TOML keys
            {"config": {"cluster": {"redis_url": "redis://r:6379"}}},  # the chart renders [cluster] from cluster.*
            {"cluster": {"enabled": "yes"}},
            {"cluster": {"enabled": True}},  # no redisUrl
            {"cluster": {"enabled": True, "redisUrl": "http://redis:6379"}},
            {"cluster": {"enabled": True, "redisUrl": "redis://"}},  # no host
            {"cluster": {"enabled": True, "redisUrl": "redis://:hunter2@redis:6379/0"}},  # a password lands in the ConfigMap
            {"cluster": {"enabled": True, "redisUrl": "rediss://hydra-authz:hunter2@redis:6380"}},
            {"cluster": {"redisUrl": "redis://:hunter2@redis:6379"}},  # not even while off
            {"cluster": {"redisUrl": "redis-master:6379"}},
            {"cluster": {"redis_url": "redis://r:6379"}},
            {"cluster": {"password": "hunter2"}},  # secrets only through existingSecret
            {"cluster": {"username": "has space"}},
            {"cluster": {"keyPrefix": ""}},
            {"cluster": {"keyPrefix": "a:b"}},  # would reach another prefix's keys
            {"cluster": {"keyPrefix": "x*"}},
            {"cluster": {"keyPrefix": "p" * 65}},
            {"cluster": {"sharedCache": "true"}},
            {"cluster": {"timeoutMs": 0}},
            {"cluster": {"timeoutMs": "100ms"}},
            {"cluster": {"healthIntervalMs": 0}},
            {"cluster": {"existingSecret": "Not_A_Name"}},
            {"cluster": {"passwordKey": "../redis-password"}},
            {"cluster": {"clusterSecretKey": "a/b"}},
            {"cluster": {"tls": {"enabled": "yes"}}},
            {"cluster": {"tls": {"existingSecret": "Not_A_Name"}}},
            {"cluster": {"tls": {"caKey": "../ca.crt"}}},
            {"cluster": {"tls": {"caFile": "/x"}}},
        ]
        for values in bad:
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(values)


def checksum(r: Rendered) -> str:
    return r.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_checksum_annotation_follows_config(default_render: Rendered):
    base = checksum(default_render)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(render()) == base, "rendering is deterministic"
    changed_url = render({"config": {"introspection": {"url": "http://hydra-admin.other:4445/admin/oauth2/introspect"}}})
    assert checksum(changed_url) != base
    changed_rules = render({"config": {"rules": [{"id": "only", "path": "/only", "scopes": ["x"]}]}})
    assert checksum(changed_rules) != base
    # Not a config change: no rollout caused by the annotation.
    assert checksum(render({"replicaCount": 5})) == base


def test_secret_checksum_when_chart_creates_secret(all_on_render: Rendered):
    annotations = all_on_render.deployment["spec"]["template"]["metadata"]["annotations"]
    rotated = render(deep_merge(all_on_values(), {"introspectionSecret": {"value": "ory_pat_rotated"}}))
    assert rotated.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] != annotations["checksum/secret"]


# ------------------------------------------------------------ the rest


def test_otel_env(default_render: Rendered, all_on_render: Rendered):
    assert not [n for n in default_render.env() if n.startswith("OTEL_")]
    env = {n: e.get("value") for n, e in all_on_render.env().items()}
    otel = all_on_values()["otel"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == otel["endpoint"]
    assert env["OTEL_SERVICE_NAME"] == otel["serviceName"]
    assert env["OTEL_TRACES_SAMPLER"] == otel["sampler"]
    assert env["OTEL_TRACES_SAMPLER_ARG"] == otel["samplerArg"]
    attrs = dict(kv.split("=", 1) for kv in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attrs["k8s.pod.name"] == "$(POD_NAME)"
    assert attrs["k8s.namespace.name"] == "$(POD_NAMESPACE)"
    assert attrs["deployment.environment"] == "prod"
    # $(VAR) expansion only works for variables defined earlier in the list.
    names = [e["name"] for e in all_on_render.container["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    # No env var may look like a config override by accident.
    assert not [n for n in names if n.startswith("HYDRA_AUTHZ_")]


def test_optional_objects(all_on_render: Rendered):
    hpa = all_on_render.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": all_on_render.deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert "replicas" not in all_on_render.deployment["spec"], "the HPA owns the replica count"
    pdb = all_on_render.one("PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": all_on_render.deployment["spec"]["selector"]["matchLabels"]}}
    np = all_on_render.one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = [r["ports"][0]["port"] for r in np["spec"]["ingress"]]
    assert ingress_ports == ["grpc-authz", "http-admin", "forward-auth", "admin"]
    assert np["spec"]["egress"][0]["ports"][0] == {"port": 53, "protocol": "UDP"}


def test_pdb_rejects_both_bounds():
    with pytest.raises(helm.HelmRenderError, match="only one"):
        render({"podDisruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}})


def test_topology_spread(default_render: Rendered, all_on_render: Rendered):
    selector = default_render.deployment["spec"]["selector"]["matchLabels"]
    tsc = default_render.pod_spec["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in tsc} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in tsc)
    # A user-given labelSelector is kept.
    assert all_on_render.pod_spec["topologySpreadConstraints"][1]["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "hydra-authz"}}


def test_notes_render(default_render: Rendered):
    assert f"{RELEASE}.{NAMESPACE}.svc.cluster.local:9191" in default_render.notes


def test_chart_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    values = load_yaml(CHART / "values.yaml")

    def leaves(d, prefix=""):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v and key not in ("resources", "podSecurityContext", "securityContext"):
                yield from leaves(v, key + ".")
            else:
                yield key

    table_keys = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    missing = [k for k in leaves(values) if k not in table_keys]
    assert missing == [], f"chart README values table misses {missing}"


# The certificate / key / CA each TLS path of the config stands for.
TLS_PEM = {
    "cert_file": "cert",
    "key_file": "key",
    "client_ca_file": "ca",
    "ca_file": "ca",
    "client_cert_file": "cert",
    "client_key_file": "key",
}


def substitute_tls_files(toml: str, cfg: dict, pem_files: dict[str, Path]) -> str:
    """Point the TLS paths (mounts in the pod) at test certificates. Only
    whole quoted TOML strings are replaced."""
    for section in (cfg["server"].get("tls", {}), cfg["introspection"].get("tls", {})):
        for key, path in section.items():
            assert json.dumps(path) in toml
            toml = toml.replace(json.dumps(path), json.dumps(str(pem_files[TLS_PEM[key]])))
    return toml


@pytest.mark.parametrize("variant", ["default", "all-on", "existing-secret-env", "tls-from-secrets", "admin-existing-secret", "forward-auth",
                                     "cluster", "cluster-public-ca"])
def test_rendered_config_accepted_by_hydra_authz(variant, tmp_path, request):
    """The real binary's `config check` accepts the rendered TOML (strict: unknown keys fail).

    Needs a built binary (DEPLOY_TESTS_BIN or target/{release,debug}); this suite
    never builds one itself. `config check` builds the verifier, so it reads
    and parses introspection.tls's CA bundle and client certificate / key
    (and the credential file); the mounts do not exist here, so those paths
    are pointed at files made in the test (openssl), as the credential is."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    r = render(ALL_VARIANTS[variant]())
    toml = r.toml_text
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_AUTHZ_", "OTEL_"))}
    cfg = tomllib.loads(toml)
    if "tls" in cfg["server"] or "tls" in cfg["introspection"]:
        toml = substitute_tls_files(toml, cfg, request.getfixturevalue("pem_files"))
    toml = substitute_admin_files(toml, cfg, tmp_path, request)
    toml = substitute_cluster_files(toml, cfg, tmp_path, request)
    auth = cfg["introspection"]["auth"]
    for key in ("token_file", "client_secret_file"):
        if key in auth:  # point the secret file reference at a temp copy
            secret_file = tmp_path / "credential"
            secret_file.write_text("dummy-credential")
            toml = toml.replace(auth[key], str(secret_file))
    for key in ("token_env", "client_secret_env"):
        if key in auth:
            env[auth[key]] = "dummy-credential"
    path = tmp_path / "hydra-authz.toml"
    path.write_text(toml)
    out = run([str(binary), "config", "check", "--config", str(path)], env=env)
    assert out.returncode == 0, f"{binary} config check failed:\n{out.stderr}\n{out.stdout}"
    assert "dummy-credential" not in out.stdout
    assert ADMIN_DUMMY_TOKEN not in out.stdout and ADMIN_DUMMY_TOKEN not in out.stderr
    for secret in (CLUSTER_DUMMY_PASSWORD, CLUSTER_DUMMY_SECRET):
        assert secret not in out.stdout and secret not in out.stderr
    # `config check` prints the effective config: every rendered value is
    # what hydra-authz uses (none lost to a misplaced table or an env var).
    assert_contained(tomllib.loads(toml), tomllib.loads(out.stdout))


ADMIN_DUMMY_TOKEN = "dummy-admin-token-0123456789"


def substitute_admin_files(toml: str, cfg: dict, tmp_path: Path, request) -> str:
    """Point the admin token / client CA files (mounts in the pod) at a temp
    token and the test admin CA (not Envoy's: hydra-authz refuses that).
    Only whole quoted TOML strings are replaced."""
    server = cfg["server"]
    if "admin_token_file" in server:
        token = tmp_path / "admin-token"
        token.write_text(ADMIN_DUMMY_TOKEN)
        assert json.dumps(server["admin_token_file"]) in toml
        toml = toml.replace(json.dumps(server["admin_token_file"]), json.dumps(str(token)))
    if "admin_client_ca_file" in server:
        ca = request.getfixturevalue("pem_files")["admin_ca"]
        assert json.dumps(server["admin_client_ca_file"]) in toml
        toml = toml.replace(json.dumps(server["admin_client_ca_file"]), json.dumps(str(ca)))
    return toml


CLUSTER_DUMMY_PASSWORD = "dummy-redis-password-0123456789"
# At least 32 bytes: hydra-authz refuses a shorter cluster secret.
CLUSTER_DUMMY_SECRET = "dummy-cluster-secret-0123456789abcdef0123456789"
# The test certificate / key / CA each [cluster] TLS path stands for.
CLUSTER_TLS_PEM = {"tls_ca_file": "ca", "tls_cert_file": "cert", "tls_key_file": "key"}


def substitute_cluster_files(toml: str, cfg: dict, tmp_path: Path, request) -> str:
    """Point [cluster]'s password / cluster secret / TLS files (mounts in the
    pod) at temp files and the test certificates. Only whole quoted TOML
    strings are replaced."""
    cluster = cfg.get("cluster", {})
    for key, content in (("password_file", CLUSTER_DUMMY_PASSWORD), ("secret_file", CLUSTER_DUMMY_SECRET)):
        if key in cluster:
            f = tmp_path / key
            f.write_text(content)
            assert json.dumps(cluster[key]) in toml
            toml = toml.replace(json.dumps(cluster[key]), json.dumps(str(f)))
    for key, pem in CLUSTER_TLS_PEM.items():
        if key in cluster:
            assert json.dumps(cluster[key]) in toml
            toml = toml.replace(json.dumps(cluster[key]), json.dumps(str(request.getfixturevalue("pem_files")[pem])))
    return toml


def assert_contained(rendered, effective, where="config"):
    """Every value in `rendered` is in `effective`, which may add defaults."""
    if isinstance(rendered, dict):
        assert isinstance(effective, dict), where
        for k, v in rendered.items():
            assert k in effective, f"{where}.{k} missing from the effective config"
            assert_contained(v, effective[k], f"{where}.{k}")
    elif isinstance(rendered, list) and rendered and isinstance(rendered[0], dict):
        assert len(rendered) == len(effective), where
        for n, (r, e) in enumerate(zip(rendered, effective)):
            assert_contained(r, e, f"{where}[{n}]")
    else:
        assert rendered == effective, f"{where}: rendered {rendered!r}, effective {effective!r}"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_AUTHZ_", "OTEL_"))}


def test_chart_defaults_match_hydra_authz(tmp_path):
    """Every config value in values.yaml is hydra-authz's own default (read
    from the binary: `config check` of an empty file prints the effective
    config), except the ones the chart sets on purpose."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    out = run([str(binary), "config", "check", "--config", str(empty)], env=clean_env())
    assert out.returncode == 0, out.stderr
    defaults = tomllib.loads(out.stdout)
    chart = load_yaml(CHART / "values.yaml")["config"]
    on_purpose = {
        "introspection.url",  # an in-cluster Hydra admin Service, not loopback
        "log.format",  # json for log collectors
        "introspection.auth.client_id",  # "" = unset; rendered only for client_secret_basic
        "rules",  # the seed example
        "server.shutdown_delay_ms",  # 5 s in a pod: endpoints update before the listeners close
        # "" = unset (not rendered), like the binary's own default: OTEL_* decides.
        "telemetry.otlp_protocol",
        "telemetry.service_name",
    }

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    compared = 0
    for key, value in leaves(chart):
        if key in on_purpose:
            continue
        binary_value = defaults
        for part in key.split("."):
            binary_value = binary_value[part]
        assert value == binary_value, f"config.{key}: chart default {value!r}, hydra-authz default {binary_value!r}"
        compared += 1
    assert compared >= 30
    # And the chart's default render says the same (no TLS, no cache).
    rendered = tomllib.loads(render().toml_text)
    for section in ("cache", "jwt", "resilience"):
        assert rendered["introspection"][section] == defaults["introspection"][section], section
    assert rendered["introspection"]["mode"] == defaults["introspection"]["mode"]
    assert rendered["telemetry"]["propagators"] == defaults["telemetry"]["propagators"]
    # The forward-auth front door is off in both, and has the same prefix.
    # Its trusted proxies are not compared: the binary trusts loopback, which
    # is never the ingress controller in a pod, so the chart wants them set.
    assert "addr" not in defaults["forward_auth"] and "forward_auth" not in rendered
    forward_auth = load_yaml(CHART / "values.yaml")["forwardAuth"]
    assert forward_auth["envoyPathPrefix"] == defaults["forward_auth"]["envoy_path_prefix"]
    assert defaults["forward_auth"]["trusted_proxies"] == ["127.0.0.0/8", "::1/128"] and forward_auth["trustedProxies"] == []
    # No TLS files by default (the re-read interval is only a setting).
    assert set(defaults["server"].get("tls", {})) <= {"reload_interval_ms"}
    assert set(defaults["introspection"].get("tls", {})) <= {"reload_interval_ms"}
    # Fleet mode is off in both ([cluster] is off without redis_url), and
    # cluster.* (camelCase, outside config.*) has the binary's defaults.
    assert "redis_url" not in defaults["cluster"] and "cluster" not in rendered
    cluster = load_yaml(CHART / "values.yaml")["cluster"]
    assert {"key_prefix": cluster["keyPrefix"], "shared_cache": cluster["sharedCache"], "timeout_ms": cluster["timeoutMs"],
            "health_interval_ms": cluster["healthIntervalMs"]} == {k: defaults["cluster"][k] for k in DEFAULT_CLUSTER} == DEFAULT_CLUSTER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_tls_config_starts(tmp_path, pem_files):
    """The TLS render really runs: hydra-authz starts with it (reading the
    server certificate, key and client CA, which `config check` does not),
    /healthz and /readyz answer over plain HTTP (what the probes use), and the
    gRPC port speaks TLS and wants a client certificate."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    toml = render(tls_from_secrets_values()).toml_text
    toml = substitute_tls_files(toml, tomllib.loads(toml), pem_files)
    grpc_port, http_port = free_port(), free_port()
    toml = toml.replace('"0.0.0.0:9191"', f'"127.0.0.1:{grpc_port}"').replace('"0.0.0.0:9192"', f'"127.0.0.1:{http_port}"')
    path = tmp_path / "hydra-authz.toml"
    path.write_text(toml)
    log = open(tmp_path / "hydra-authz.log", "w+")
    proc = subprocess.Popen([str(binary), "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"hydra-authz exited {proc.returncode}:\n{(tmp_path / 'hydra-authz.log').read_text()}"
            try:
                if http_status(f"http://127.0.0.1:{http_port}/readyz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "hydra-authz did not become ready"
            time.sleep(0.1)
        assert http_status(f"http://127.0.0.1:{http_port}/healthz") == 200

        def handshake(with_client_cert: bool) -> bytes:
            ctx = ssl.create_default_context(cafile=str(pem_files["ca"]))
            ctx.set_alpn_protocols(["h2"])
            if with_client_cert:
                ctx.load_cert_chain(str(pem_files["cert"]), str(pem_files["key"]))
            with socket.create_connection(("127.0.0.1", grpc_port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    assert tls.selected_alpn_protocol() == "h2"
                    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
                    return tls.recv(9)

        # With the client certificate: TLS (verified against the CA), then an HTTP/2 SETTINGS frame.
        frame = handshake(True)
        assert len(frame) == 9 and frame[3] == 0x04, frame
        # Without one: refused (TLS 1.3 reports it after the handshake, as an
        # alert or a closed connection), never an HTTP/2 answer.
        try:
            answer = handshake(False)
        except ssl.SSLError as e:
            assert "CERTIFICATE_REQUIRED" in str(e).upper(), e
        except ConnectionError:
            pass  # reset: refused as well
        else:
            assert answer == b"", f"a client without a certificate got an HTTP/2 answer: {answer!r}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_admin_listener_starts(tmp_path, request):
    """The admin render really runs: hydra-authz starts with it (reading the
    token file), and the admin API listens on its own port and speaks HTTP/2
    (gRPC), apart from the Check port."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    toml = render(admin_existing_secret_values()).toml_text
    toml = substitute_admin_files(toml, tomllib.loads(toml), tmp_path, request)
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    for old, new in (("9191", grpc_port), ("9192", http_port), ("9193", admin_port)):
        assert toml.count(f'"0.0.0.0:{old}"') == 1
        toml = toml.replace(f'"0.0.0.0:{old}"', f'"127.0.0.1:{new}"')
    path = tmp_path / "hydra-authz.toml"
    path.write_text(toml)
    log = open(tmp_path / "hydra-authz.log", "w+")
    proc = subprocess.Popen([str(binary), "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"hydra-authz exited {proc.returncode}:\n{(tmp_path / 'hydra-authz.log').read_text()}"
            try:
                if http_status(f"http://127.0.0.1:{http_port}/readyz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "hydra-authz did not become ready"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
            frame = s.recv(9)
        assert len(frame) == 9 and frame[3] == 0x04, f"no HTTP/2 SETTINGS from the admin listener: {frame!r}"
        assert ADMIN_DUMMY_TOKEN not in (tmp_path / "hydra-authz.log").read_text(), "the admin token was logged"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def forward_auth_get(port: int, path: str, headers: dict[str, str], source: str) -> tuple[int, dict[str, str], bytes]:
    """GET from a given loopback source address (Linux routes all of
    127.0.0.0/8 to lo), so one listener sees a trusted and an untrusted peer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_forward_auth_listener_starts(tmp_path):
    """The forward-auth render really runs: hydra-authz starts with it, the
    listener answers on forwardAuth.port with the configured prefix, and
    forwardAuth.trustedProxies decides whose forwarded headers count: a
    trusted peer without a token gets 401 + the Bearer challenge, any other
    peer 400."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built (set DEPLOY_TESTS_BIN or run cargo build first)")
    trusted, untrusted = "127.0.0.2", "127.0.0.1"
    toml = render({"forwardAuth": {"enabled": True, "trustedProxies": [f"{trusted}/32"], "envoyPathPrefix": "/authz"}}).toml_text
    grpc_port, http_port, fa_port = free_port(), free_port(), free_port()
    for old, new in (("9191", grpc_port), ("9192", http_port), ("9194", fa_port)):
        assert toml.count(f'"0.0.0.0:{old}"') == 1
        toml = toml.replace(f'"0.0.0.0:{old}"', f'"127.0.0.1:{new}"')
    path = tmp_path / "hydra-authz.toml"
    path.write_text(toml)
    log = open(tmp_path / "hydra-authz.log", "w+")
    proc = subprocess.Popen([str(binary), "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/date", "X-Forwarded-Host": "api.example.com"}
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"hydra-authz exited {proc.returncode}:\n{(tmp_path / 'hydra-authz.log').read_text()}"
            try:
                if http_status(f"http://127.0.0.1:{http_port}/readyz") == 200:
                    status, _, _ = forward_auth_get(fa_port, "/forward-auth", forwarded, trusted)
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "hydra-authz (or its forward-auth listener) did not come up"
            time.sleep(0.1)
        # nginx / Caddy / Traefik style, from a trusted proxy: GET /date needs read_date.
        status, headers, _ = forward_auth_get(fa_port, "/forward-auth", forwarded, trusted)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (status, headers)
        # Envoy http_service / Istio style, behind the configured prefix.
        status, headers, _ = forward_auth_get(fa_port, "/authz/date", {"Host": "api.example.com"}, trusted)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (status, headers)
        # The binary's default prefix is not served: the chart's value reached it.
        status, _, _ = forward_auth_get(fa_port, "/ext-authz/date", {}, trusted)
        assert status == 404
        # Not in trustedProxies (loopback, which the binary alone would trust): 400.
        status, _, body = forward_auth_get(fa_port, "/forward-auth", forwarded, untrusted)
        assert status == 400 and b"trusted_proxies" in body, (status, body)
        status, _, _ = forward_auth_get(fa_port, "/authz/date", {}, untrusted)
        assert status == 400
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
