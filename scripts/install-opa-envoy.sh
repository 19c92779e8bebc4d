#!/usr/bin/env bash
# Build (once per machine) the pinned OPA-Envoy from tests/opa-envoy/go.mod and
# print the binary's absolute path; see scripts/install-ory.sh.
#
# Usage:  OPA_ENVOY="$(scripts/install-opa-envoy.sh)"
exec "$(dirname "${BASH_SOURCE[0]}")/install-ory.sh" opa-envoy "$@"
