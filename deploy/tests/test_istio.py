"""The Istio kit deploy/istio.

AuthorizationPolicy and EnvoyFilter: validated against Istio's CRD schemas
through cloudcoil-models-istio (pydantic models generated from Istio's CRDs),
plus a round trip that fails on any field the schema does not know. The
EnvoyFilter's patch is also applied to the Envoy kit's HTTP connection
manager and validated by the pinned Envoy.

meshConfig has no CRD (it is istiod's configuration, not a Kubernetes
resource) and no registry package ships a schema for it, so its fields are
checked here against the MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider
API and against the Service the Helm chart really renders.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from cloudcoil.models.istio.networking import v1alpha3 as istio_networking_v1alpha3
from cloudcoil.models.istio.security import v1 as istio_security_v1
from pydantic import ValidationError

from conftest import NAMESPACE, RELEASE, REPO, deep_merge, load_yaml

ISTIO = REPO / "deploy" / "istio"
PROVIDER_NAME = "hydra-authz"

HCM_FILTER = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Fields of Istio's EnvoyExternalAuthorizationGrpcProvider (istio.mesh.v1alpha1).
GRPC_PROVIDER_FIELDS = {"service", "port", "timeout", "failOpen", "statusOnError", "clearRouteCache", "includeRequestBodyInCheck"}


def mesh_config() -> dict:
    doc = load_yaml(ISTIO / "mesh-config.yaml")
    assert doc["apiVersion"] == "install.istio.io/v1alpha1"
    assert doc["kind"] == "IstioOperator"
    return doc["spec"]["meshConfig"]


def provider() -> dict:
    providers = mesh_config()["extensionProviders"]
    matching = [p for p in providers if p["name"] == PROVIDER_NAME]
    assert len(matching) == 1
    return matching[0]


def policy() -> dict:
    docs = [d for d in yaml.safe_load_all((ISTIO / "authorization-policy.yaml").read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert m, f"not a protobuf duration: {text!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_authorization_policy_matches_istio_crd_schema():
    doc = policy()
    model = istio_security_v1.AuthorizationPolicy.model_validate(doc)
    # The models ignore unknown fields like the API server prunes them; a
    # lossless round trip proves every field in the file is in the schema.
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


def test_istio_schema_is_really_checked():
    doc = policy()
    with pytest.raises(ValidationError):
        istio_security_v1.AuthorizationPolicy.model_validate({**doc, "spec": {**doc["spec"], "action": "EXTERNAL"}})
    with pytest.raises(ValidationError):
        istio_security_v1.AuthorizationPolicy.model_validate({**doc, "apiVersion": "security.istio.io/v1beta2"})
    typo = {**doc, "spec": {**doc["spec"], "providr": {"name": PROVIDER_NAME}}}
    model = istio_security_v1.AuthorizationPolicy.model_validate(typo)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") != typo


def test_authorization_policy_fields():
    doc = policy()
    assert doc["apiVersion"] == "security.istio.io/v1"
    assert doc["kind"] == "AuthorizationPolicy"
    spec = doc["spec"]
    assert spec["action"] == "CUSTOM"
    # CUSTOM needs a provider, and it must be one meshConfig declares.
    assert spec["provider"]["name"] == provider()["name"] == PROVIDER_NAME
    # A CUSTOM policy only sends requests matching a rule; no rules = nothing checked.
    assert spec.get("rules"), "a CUSTOM policy without rules authorizes nothing"
    # Every request: a path, host or port left out reaches the workload
    # unchecked, with the caller's own identity headers.
    assert spec["rules"] == [{}], spec["rules"]
    assert spec["selector"]["matchLabels"], "scope the policy to the protected workload"


def test_extension_provider_fields():
    p = provider()
    grpc = p["envoyExtAuthzGrpc"]
    assert set(grpc) <= GRPC_PROVIDER_FIELDS, f"unknown envoyExtAuthzGrpc fields: {set(grpc) - GRPC_PROVIDER_FIELDS}"
    assert grpc["port"] == 9191
    assert grpc["failOpen"] is False, "the authorizer must fail closed"
    assert grpc["statusOnError"] == "503"
    # Istio's timeout must leave room for hydra-authz's own introspection timeout.
    chart_values = load_yaml(REPO / "deploy" / "helm" / "hydra-authz" / "values.yaml")
    assert duration_seconds(grpc["timeout"]) > chart_values["config"]["introspection"]["timeout_ms"] / 1000


def test_extension_provider_points_at_the_chart_service():
    from conftest import render

    r = render()
    svc = r.one("Service")
    grpc = provider()["envoyExtAuthzGrpc"]
    assert grpc["service"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert (svc["metadata"]["name"], svc["metadata"]["namespace"]) == (RELEASE, NAMESPACE)
    port = {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc-authz"]
    assert grpc["port"] == port


def envoy_filter() -> dict:
    docs = [d for d in yaml.safe_load_all((ISTIO / "reject-underscore-headers.yaml").read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_envoy_filter_matches_istio_crd_schema():
    doc = envoy_filter()
    model = istio_networking_v1alpha3.EnvoyFilter.model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc
    # The schema really checks the enums this file relies on.
    for mutate in (
        lambda d: d["spec"]["configPatches"][0]["match"].update(context="SIDECAR_IN"),
        lambda d: d["spec"]["configPatches"][0].update(applyTo="NETWORK_FILTR"),
        lambda d: d["spec"]["configPatches"][0]["patch"].update(operation="MERGED"),
        lambda d: d.update(apiVersion="networking.istio.io/v1"),
    ):
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(ValidationError):
            istio_networking_v1alpha3.EnvoyFilter.model_validate(bad)


def test_envoy_filter_rejects_underscore_headers_mesh_wide():
    """Gateways and the inbound side of every sidecar (where the CUSTOM policy
    calls hydra-authz) refuse header names with underscores."""
    doc = envoy_filter()
    assert (doc["apiVersion"], doc["kind"]) == ("networking.istio.io/v1alpha3", "EnvoyFilter")
    # Istio's root namespace and no workloadSelector: every proxy of the mesh.
    assert doc["metadata"]["namespace"] == "istio-system"
    assert "workloadSelector" not in doc["spec"] and "targetRefs" not in doc["spec"]
    patches = doc["spec"]["configPatches"]
    assert sorted(p["match"]["context"] for p in patches) == ["GATEWAY", "SIDECAR_INBOUND"]
    for p in patches:
        assert p["applyTo"] == "NETWORK_FILTER"
        assert p["match"]["listener"]["filterChain"]["filter"]["name"] == HCM_FILTER
        assert p["patch"]["operation"] == "MERGE"
        typed = p["patch"]["value"]["typed_config"]
        assert typed["@type"] == HCM_TYPE
        assert typed["common_http_protocol_options"] == {"headers_with_underscores_action": "REJECT_REQUEST"}


def test_envoy_filter_patch_is_the_envoy_kit_setting():
    """MERGE the patch into the Envoy kit's connection manager without the
    setting: the result is exactly the kit's own HCM, which the pinned Envoy
    validates (test_envoy_kit.py), so field and enum names are Envoy's."""
    kit = load_yaml(REPO / "deploy" / "envoy" / "envoy.yaml")
    (listener,) = kit["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == HCM_FILTER
    without = copy.deepcopy(hcm)
    del without["typed_config"]["common_http_protocol_options"]
    for p in envoy_filter()["spec"]["configPatches"]:
        merged = deep_merge(without, p["patch"]["value"])
        assert merged == hcm, p["match"]["context"]


def test_readme_walkthrough_mentions_every_file():
    readme = (ISTIO / "README.md").read_text()
    for needle in ("mesh-config.yaml", "authorization-policy.yaml", "reject-underscore-headers.yaml", "helm install",
                   "failOpen", "action: CUSTOM", "headers_with_underscores_action: REJECT_REQUEST"):
        assert needle in readme, needle
