#!/usr/bin/env bash
# Make Debian's `prometheus` and `promtool` available for deploy/tests
# (test_observability.py: promtool check/test rules, a live Prometheus), and
# print the directory to put first on PATH.
#
# Usage:  prom_dir="$(scripts/install-prometheus.sh)"
#         [[ -z "${prom_dir}" ]] || export PATH="${prom_dir}:${PATH}"
#
# When both are already on PATH (e.g. `apt-get install prometheus`), nothing
# is installed and nothing is printed. Otherwise Debian's package is fetched
# with `apt-get download` and unpacked (dpkg-deb -x, no maintainer scripts:
# no service is started or enabled, no user created, no root needed) into a
# private directory, whose bin/ path is printed. The two binaries are static
# Go programs but for libc. Only that path goes to stdout; messages go to
# stderr. Idempotent.
#
# Environment:
#   PROMETHEUS_DIR  where to unpack (default: <repo>/.venv-deploy/prometheus,
#                   beside the deploy tests' venv, which git ignores)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/.." && pwd)"
dest="${PROMETHEUS_DIR:-${repo_dir}/.venv-deploy/prometheus}"
bin_dir="${dest}/usr/bin"

# Succeeds if `$1/promtool` and `$1/prometheus` (or those on PATH when $1 is
# empty) run and are Prometheus 2.x or newer (`promtool test rules`).
prom_ok() {
    local prefix="${1:+$1/}" out
    out="$("${prefix}promtool" --version 2>&1)" || return 1
    [[ "${out}" =~ version\ ([0-9]+)\. ]] && ((BASH_REMATCH[1] >= 2)) || return 1
    "${prefix}prometheus" --version >/dev/null 2>&1
}

if prom_ok ""; then
    exit 0
fi
if [[ -d "${bin_dir}" ]] && prom_ok "${bin_dir}"; then
    printf '%s\n' "$(cd "${bin_dir}" && pwd -P)"
    exit 0
fi

command -v apt-get >/dev/null || {
    echo "install-prometheus: no prometheus/promtool on PATH and no apt-get; install Prometheus >= 2 (prometheus, promtool) and put it on PATH" >&2
    exit 1
}
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
download() { (cd "${tmp}" && apt-get download -qq prometheus >/dev/null 2>&1); }
if ! download; then
    # A fresh machine may have no package lists yet.
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "install-prometheus: apt-get update" >&2
        apt-get update -qq >&2
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq >&2
    fi
    download || {
        echo "install-prometheus: apt-get download prometheus failed" >&2
        exit 1
    }
fi
deb="$(ls "${tmp}"/prometheus_*.deb)"
echo "install-prometheus: unpacking $(basename "${deb}") into ${dest}" >&2
rm -rf "${dest}"
mkdir -p "${dest}"
dpkg-deb -x "${deb}" "${dest}"
if ! prom_ok "${bin_dir}"; then
    echo "install-prometheus: ${bin_dir}/promtool or prometheus does not run" >&2
    exit 1
fi
printf '%s\n' "$(cd "${bin_dir}" && pwd -P)"
