"""The Istio kit deploy/istio.

AuthorizationPolicy: validated against Istio's CRD schema through
cloudcoil-models-istio (pydantic models generated from Istio's CRDs), plus a
round trip that fails on any field the schema does not know.

meshConfig has no CRD (it is istiod's configuration, not a Kubernetes
resource) and no registry package ships a schema for it, so its fields are
checked here against the MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider
API and against the Service the Helm chart really renders.
"""

from __future__ import annotations

import re

import pytest
import yaml
from cloudcoil.models.istio.security import v1 as istio_security_v1
from pydantic import ValidationError

from conftest import NAMESPACE, RELEASE, REPO, load_yaml

ISTIO = REPO / "deploy" / "istio"
PROVIDER_NAME = "hydra-authz"

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


def test_readme_walkthrough_mentions_both_files():
    readme = (ISTIO / "README.md").read_text()
    for needle in ("mesh-config.yaml", "authorization-policy.yaml", "helm install", "failOpen", "action: CUSTOM"):
        assert needle in readme, needle
