"""The Envoy Gateway kit (deploy/envoy-gateway): Gateway API and Envoy
Gateway manifests that authorize every route with hydra-authz, per-route
scopes through SecurityPolicy extAuth contextExtensions (Envoy Gateway >=
v1.7.0, envoyproxy/gateway#7383).

- The manifests are validated against the CRD schemas of Gateway API v1.6.1
  (standard channel) and Envoy Gateway v1.9.0, vendored in
  deploy/tests/schemas from Envoy Gateway's source (no registry package
  ships them; see vendor_crd_schemas.py there): structurally with
  jsonschema (unknown fields are errors, as `kubectl --validate=strict`
  makes them), schema defaults applied, then every CEL rule
  (x-kubernetes-validations) evaluated with cel-python as the API server
  would.
- equivalent-envoy-routes.yaml, the plain Envoy configuration they amount
  to, is derived from them here (same routes, same context extensions, same
  ext_authz settings), validated by the real Envoy, and run: Envoy in front
  of a real hydra-authz that has no [[rules]] at all, so the context
  extensions alone decide, with the same answers as the seed rules.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from conftest import REPO, find_envoy_binary, find_hydra_authz_binary, load_yaml, render, run
from livestack import FakeHydra, Stack, Upstream, free_port, hydra_authz_toml, request, rewrite_ports

KIT = REPO / "deploy" / "envoy-gateway"
MANIFESTS = sorted((KIT / "manifests").glob("*.yaml")) + sorted((KIT / "tls").glob("*.yaml"))
EQUIVALENT = KIT / "equivalent-envoy-routes.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SEED_CONFIG = REPO / "config" / "hydra-authz.toml"

GATEWAY_API = "gateway.networking.k8s.io"
EG = "gateway.envoyproxy.io"
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for path in SCHEMAS.glob("*.json"):
        doc = json.loads(path.read_text())
        out[(f"{doc['group']}/{doc['version']}", doc["kind"])] = doc
    return out


def docs() -> list[dict]:
    out = []
    for path in MANIFESTS:
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


def of_kind(kind: str) -> list[dict]:
    return [d for d in docs() if d["kind"] == kind]


def strict(schema: dict) -> dict:
    """Unknown fields are errors (the API server would prune them silently:
    a misspelt field would just be ignored)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    # The object's metadata is only `type: object` in a CRD schema.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                       "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                       "labels": {"type": "object"}, "annotations": {"type": "object"}},
        "additionalProperties": False,
    }
    return schema


def apply_defaults(schema: dict, value):
    """Structural defaulting, as the API server does before CEL runs."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        for v in value:
            apply_defaults(schema["items"], v)
    return value


def cel_results(schema: dict, value, path=()) -> list[tuple[tuple, str, str | None, object]]:
    """(path, rule, message, result) for every CEL rule of the schema nodes
    `value` has (transition rules, which need oldSelf, are left out)."""
    import celpy

    env = celpy.Environment()
    out = []

    def walk(node, v, p):
        for r in node.get("x-kubernetes-validations", []):
            if "oldSelf" in r["rule"]:
                continue
            try:
                result = env.program(env.compile(r["rule"])).evaluate({"self": celpy.json_to_cel(v)})
            except Exception as e:  # noqa: BLE001 - reported by the caller
                result = e
            out.append((p, r["rule"], r.get("message"), result))
        if isinstance(v, dict):
            props = node.get("properties", {})
            for k, sub in v.items():
                if k in props:
                    walk(props[k], sub, p + (k,))
                elif isinstance(node.get("additionalProperties"), dict):
                    walk(node["additionalProperties"], sub, p + (k,))
        elif isinstance(v, list) and "items" in node:
            for i, sub in enumerate(v):
                walk(node["items"], sub, p + (i,))

    walk(schema, value, path)
    return out


def violations(doc: dict) -> list[str]:
    """Every way `doc` breaks its CRD schema: structure, then CEL rules."""
    entry = schemas()[(doc["apiVersion"], doc["kind"])]
    errors = [f"{'.'.join(map(str, e.path))}: {e.message[:200]}"
              for e in Draft7Validator(strict(entry["schema"])).iter_errors(doc)]
    defaulted = apply_defaults(entry["schema"], copy.deepcopy(doc))
    for path, rule, message, result in cel_results(entry["schema"], defaulted):
        if isinstance(result, Exception) or type(result).__name__ == "CELEvalError":
            errors.append(f"{'.'.join(map(str, path))}: CEL rule could not be evaluated: {rule}: {result}")
        elif not bool(result):
            errors.append(f"{'.'.join(map(str, path))}: {message or rule}")
    return errors


# ---------------------------------------------------------------- the schemas


def test_vendored_schemas_name_their_source():
    found = schemas()
    assert {k for _, k in found} == {"GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant", "BackendTLSPolicy",
                                     "SecurityPolicy", "ClientTrafficPolicy"}
    for (api, kind), doc in found.items():
        src = doc["source"]
        assert src["repository"] == "https://github.com/envoyproxy/gateway"
        assert src["tag"] == "v1.9.0" and re.fullmatch(r"[0-9a-f]{40}", src["commit"])
        if api.startswith(GATEWAY_API):
            assert src["gateway_api_bundle_version"] == "v1.6.1", kind
    # The field PR #7383 added is in the vendored SecurityPolicy schema.
    sp = found[(f"{EG}/v1alpha1", "SecurityPolicy")]["schema"]
    ext = sp["properties"]["spec"]["properties"]["extAuth"]["properties"]["contextExtensions"]
    assert set(ext["items"]["properties"]) == {"name", "type", "value", "valueRef"}


def test_every_manifest_kind_has_a_schema():
    known = schemas()
    for d in docs():
        assert (d["apiVersion"], d["kind"]) in known, (d["apiVersion"], d["kind"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KIT)))
def test_manifests_match_the_crd_schemas(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            assert violations(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"


def test_cel_rules_are_really_evaluated():
    """Not vacuous: the CEL rules of these kinds run, and pass."""
    count = 0
    for d in docs():
        entry = schemas()[(d["apiVersion"], d["kind"])]
        results = cel_results(entry["schema"], apply_defaults(entry["schema"], copy.deepcopy(d)))
        count += len(results)
        assert all(r[3] is True or type(r[3]).__name__ == "BoolType" and bool(r[3]) for r in results), results
    assert count >= 50


def test_validation_rejects_broken_manifests():
    (date,) = [d for d in of_kind("SecurityPolicy") if d["metadata"]["name"] == "date-authz"]

    def broken(edit) -> list[str]:
        doc = copy.deepcopy(date)
        edit(doc["spec"])
        return violations(doc)

    # A misspelt field (the API server would drop it: the route would lose its scopes).
    assert broken(lambda s: s["extAuth"].update(contextExtension=s["extAuth"].pop("contextExtensions")))
    # An unknown type of context extension value (enum).
    assert broken(lambda s: s["extAuth"]["contextExtensions"][0].update(type="Literal"))
    # CEL: a value and a valueRef at once.
    errors = broken(lambda s: s["extAuth"]["contextExtensions"][0].update(
        valueRef={"group": "", "kind": "ConfigMap", "name": "scopes", "key": "date"}))
    assert any("Exactly one of value or valueRef" in e for e in errors), errors
    # CEL: extAuth with neither grpc nor http.
    errors = broken(lambda s: s["extAuth"].pop("grpc"))
    assert any("one of grpc or http must be specified" in e for e in errors), errors
    # CEL: a policy may only target Gateway API kinds.
    errors = broken(lambda s: s["targetRefs"][0].update(group="apps", kind="Deployment"))
    assert any("targetRefs[*].group" in e or "targetRefs[*].kind" in e for e in errors), errors
    # A status outside the allowed list.
    assert broken(lambda s: s["extAuth"].update(statusOnError=299))


# ------------------------------------------------------------- the semantics


def seed_rules() -> dict[tuple[str, str], str]:
    import tomllib

    cfg = tomllib.loads(SEED_CONFIG.read_text())
    return {(m, r["path"]): " ".join(r["scopes"]) for r in cfg["rules"] for m in r["methods"]}


def route_scopes() -> dict[tuple[str, str], str]:
    """(method, path) -> required_scopes of the SecurityPolicy targeting its HTTPRoute."""
    policies = {}
    for sp in of_kind("SecurityPolicy"):
        for ref in sp["spec"]["targetRefs"]:
            if ref["kind"] == "HTTPRoute":
                assert ref["name"] not in policies, f"two policies for HTTPRoute {ref['name']}"
                policies[ref["name"]] = sp
    out = {}
    for route in of_kind("HTTPRoute"):
        sp = policies[route["metadata"]["name"]]
        assert sp["metadata"]["namespace"] == route["metadata"]["namespace"]
        ext = {e["name"]: e["value"] for e in sp["spec"]["extAuth"]["contextExtensions"]}
        assert set(ext) == {"required_scopes"}
        for rule in route["spec"]["rules"]:
            for m in rule["matches"]:
                assert m["path"]["type"] == "Exact"
                out[(m["method"], m["path"]["value"])] = ext["required_scopes"]
    return out


def test_routes_require_the_seed_scopes():
    """/date -> read_date, /echo -> post_echo, as config/hydra-authz.toml's rules."""
    assert route_scopes() == seed_rules() == {("GET", "/date"): "read_date", ("POST", "/echo"): "post_echo"}


def test_every_route_is_authorized_fail_closed_by_the_chart_service():
    (gateway,) = of_kind("Gateway")
    (gateway_class,) = of_kind("GatewayClass")
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    assert gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    chart_service = render().service
    grpc_port = next(p for p in chart_service["spec"]["ports"] if p["name"] == "grpc-authz")
    targets = set()
    for sp in of_kind("SecurityPolicy"):
        ext = sp["spec"]["extAuth"]
        assert ext["failOpen"] is False and ext["statusOnError"] == 503, sp["metadata"]["name"]
        (ref,) = ext["grpc"]["backendRefs"]
        assert ref == {"name": chart_service["metadata"]["name"], "namespace": chart_service["metadata"]["namespace"],
                       "port": grpc_port["port"]}, "extAuth must call the chart's Check port, never the admin API"
        assert "http" not in ext
        targets |= {(t["kind"], t["name"]) for t in sp["spec"]["targetRefs"]}
    # The Gateway itself has a policy: a route added without one is not open.
    assert ("Gateway", gateway["metadata"]["name"]) in targets
    assert {("HTTPRoute", r["metadata"]["name"]) for r in of_kind("HTTPRoute")} <= targets
    for route in of_kind("HTTPRoute"):
        assert [p["name"] for p in route["spec"]["parentRefs"]] == [gateway["metadata"]["name"]]
    # The cross-namespace reference is granted, for exactly that Service.
    (grant,) = of_kind("ReferenceGrant")
    assert grant["metadata"]["namespace"] == chart_service["metadata"]["namespace"]
    assert grant["spec"]["from"] == [{"group": EG, "kind": "SecurityPolicy", "namespace": gateway["metadata"]["namespace"]}]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": chart_service["metadata"]["name"]}]
    # The TLS policy targets the chart Service's gRPC port by name.
    (tls,) = of_kind("BackendTLSPolicy")
    (target,) = tls["spec"]["targetRefs"]
    assert (target["name"], target["sectionName"]) == (chart_service["metadata"]["name"], grpc_port["name"])
    assert tls["spec"]["validation"]["hostname"].startswith(
        f"{chart_service['metadata']['name']}.{chart_service['metadata']['namespace']}.svc")


def hcm(bootstrap: dict) -> dict:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (f,) = chain["filters"]
    return f["typed_config"]


def duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_equivalent_envoy_config_is_what_the_manifests_say():
    """equivalent-envoy-routes.yaml, read against the manifests: the same
    routes with the same context extensions, the same ext_authz settings and
    the same client-facing hygiene."""
    boot = load_yaml(EQUIVALENT)
    cm = hcm(boot)
    (ext_authz,) = [f for f in cm["http_filters"] if f["name"] == EXT_AUTHZ]
    # Enabled by per-route config only, as Envoy Gateway's filters are.
    assert ext_authz["disabled"] is True
    cfg = ext_authz["typed_config"]
    for sp in of_kind("SecurityPolicy"):
        ext = sp["spec"]["extAuth"]
        assert cfg["failure_mode_allow"] is ext["failOpen"]
        assert cfg["status_on_error"]["code"] == ext["statusOnError"]
        assert duration_s(cfg["grpc_service"]["timeout"]) == duration_s(ext["timeout"])
        clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
        authz = clusters[cfg["grpc_service"]["envoy_grpc"]["cluster_name"]]
        assert duration_s(authz["connect_timeout"]) == duration_s(
            ext["grpc"]["backendSettings"]["timeout"]["tcp"]["connectTimeout"])
        assert "http2_protocol_options" in json.dumps(authz)
    # Routes: one per HTTPRoute match, nothing else.
    (vhost,) = cm["route_config"]["virtual_hosts"]
    got = {}
    for route in vhost["routes"]:
        match = route["match"]
        (method,) = [h["string_match"]["exact"] for h in match["headers"] if h["name"] == ":method"]
        per_route = route["typed_per_filter_config"][EXT_AUTHZ]
        assert per_route["@type"].endswith("ExtAuthzPerRoute")
        got[(method, match["path"])] = per_route["check_settings"]["context_extensions"]
    assert got == {k: {"required_scopes": v} for k, v in route_scopes().items()}
    # ClientTrafficPolicy -> the connection manager's hygiene.
    (ctp,) = of_kind("ClientTrafficPolicy")
    assert ctp["spec"]["headers"]["withUnderscoresAction"] == "RejectRequest"
    assert cm["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    assert ctp["spec"]["path"]["escapedSlashesAction"] == "RejectRequest"
    assert cm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert ctp["spec"]["path"]["disableMergeSlashes"] is False and cm["merge_slashes"] is True
    assert cm["normalize_path"] is True


def test_envoy_validates_the_equivalent_config():
    envoy = find_envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary (scripts/test-deploy.sh installs the pinned one)")
    out = run([str(envoy), "--mode", "validate", "-c", str(EQUIVALENT), "--log-level", "error"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_config_check_finds_no_unprotected_route():
    """hydra-authz's own lint of the Envoy routes (`config check --envoy`):
    every route brings its policy, none is left to deny-all."""
    binary = find_hydra_authz_binary()
    if binary is None:
        pytest.skip("no hydra-authz binary built")
    out = run([str(binary), "config", "check", "--config", str(SEED_CONFIG), "--envoy", str(EQUIVALENT)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warn" not in out.stderr.lower(), out.stderr


def decisions(http_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2).read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^hydra_authz_decisions_total\{decision="\w+",reason="(\w+)"\} (\S+)$', text, re.M)}


def test_equivalent_config_decides_like_the_seed_rules_with_no_rules(tmp_path):
    """The real Envoy with equivalent-envoy-routes.yaml in front of a
    hydra-authz with NO [[rules]]: the context extensions alone give the
    seed API's answers."""
    envoy = find_envoy_binary()
    binary = find_hydra_authz_binary()
    if envoy is None or binary is None:
        pytest.skip("needs the envoy and hydra-authz binaries")
    stack = Stack(tmp_path)
    try:
        hydra = FakeHydra({"reader-1": "read_date", "writer-1": "post_echo", "both-1": "read_date post_echo"})
        upstream = Upstream()
        stack.servers += [hydra, upstream]
        grpc_port, http_port = free_port(), free_port()
        stack.hydra_authz(binary, hydra_authz_toml(grpc_port=grpc_port, http_port=http_port,
                                                   introspection_url=hydra.url))
        listener, admin = free_port(), free_port()
        stack.envoy(envoy, rewrite_ports(EQUIVALENT.read_text(),
                                         {19000: admin, 10080: listener, 9191: grpc_port, 8080: upstream.port}), admin)
        api = f"http://127.0.0.1:{listener}"
        cases = [
            ("GET", "/date", "reader-1", 200),
            ("GET", "/date", "both-1", 200),
            ("GET", "/date", "writer-1", 403),   # insufficient_scope
            ("GET", "/date", None, 401),         # missing_token
            ("GET", "/date", "revoked", 401),    # invalid_token
            ("POST", "/echo", "writer-1", 200),
            ("POST", "/echo", "reader-1", 403),
            ("POST", "/echo", None, 401),
            # No HTTPRoute matches: Envoy's 404, hydra-authz is not asked.
            ("POST", "/date", "reader-1", 404),
            ("GET", "/echo", "writer-1", 404),
            ("GET", "/other", "reader-1", 404),
        ]
        for method, path, token, status in cases:
            assert request(method, f"{api}{path}", token) == status, (method, path, token)
        got = decisions(http_port)
        assert got == {"allowed": 3, "insufficient_scope": 2, "missing_token": 2, "invalid_token": 1}, got
    finally:
        stack.close()
