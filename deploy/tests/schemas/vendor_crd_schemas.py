#!/usr/bin/env python3
"""Re-vendor the CRD schemas deploy/tests/test_envoy_gateway.py validates the
Envoy Gateway kit (deploy/envoy-gateway) against.

No registry package ships Envoy Gateway's CRDs (PyPI, npm: only
@kubernetes-models/gateway-api, which covers Gateway API alone and needs
Node), so the schemas are taken from Envoy Gateway's own source, whose CRD
chart bundles the standard channel of the Gateway API CRDs it supports:

    python3 deploy/tests/schemas/vendor_crd_schemas.py GIT_DIR [TAG]

GIT_DIR is a clone of https://github.com/envoyproxy/gateway (a bare one is
fine); TAG defaults to the one below. Each kind is written to
<group>_<version>_<kind>.json as {"source": ..., "schema": openAPIV3Schema},
exactly as the CRD declares it (CEL x-kubernetes-validations included).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

TAG = "v1.9.0"
STANDARD = "charts/gateway-crds-helm/templates/standard-gatewayapi-crds.yaml"
GENERATED = "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_{}.yaml"

# (file in the tag, kind, version)
WANTED = [
    (STANDARD, "GatewayClass", "v1"),
    (STANDARD, "Gateway", "v1"),
    (STANDARD, "HTTPRoute", "v1"),
    (STANDARD, "ReferenceGrant", "v1beta1"),
    (STANDARD, "BackendTLSPolicy", "v1"),
    (GENERATED.format("securitypolicies"), "SecurityPolicy", "v1alpha1"),
    (GENERATED.format("clienttrafficpolicies"), "ClientTrafficPolicy", "v1alpha1"),
]


def show(git_dir: str, rev: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{rev}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def strip_helm_guard(text: str) -> str:
    """The standard-channel file is wrapped in one `{{- if ... }}` / `{{- end }}`."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("{{")]
    return "\n".join(lines)


def main() -> None:
    git_dir = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else TAG
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", f"{tag}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    out_dir = Path(__file__).resolve().parent
    for path, kind, version in WANTED:
        docs = yaml.safe_load_all(strip_helm_guard(show(git_dir, commit, path)))
        crd = next(d for d in docs if d and d.get("kind") == "CustomResourceDefinition"
                   and d["spec"]["names"]["kind"] == kind)
        ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
        annotations = crd["metadata"].get("annotations", {})
        source = {
            "repository": "https://github.com/envoyproxy/gateway",
            "tag": tag,
            "commit": commit,
            "path": path,
            "crd": crd["metadata"]["name"],
            "gateway_api_bundle_version": annotations.get("gateway.networking.k8s.io/bundle-version"),
            "envoy_gateway_controller_gen": annotations.get("controller-gen.kubebuilder.io/version"),
            "license": "Apache-2.0",
        }
        group = crd["spec"]["group"]
        doc = {"source": source, "group": group, "version": version, "kind": kind,
               "schema": ver["schema"]["openAPIV3Schema"]}
        target = out_dir / f"{group}_{version}_{kind}.json"
        target.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
        print(f"{target.name}: {target.stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
