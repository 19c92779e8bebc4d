#!/usr/bin/env bash
# Build a pinned Ory program (Hydra or Oathkeeper), or OPA-Envoy, from the Go module proxy,
# once per machine, and print the absolute path of the binary.
#
# Usage:  HYDRA="$(scripts/install-ory.sh hydra)"
#         OATHKEEPER="$(scripts/install-ory.sh oathkeeper)"
#         OPA_ENVOY="$(scripts/install-ory.sh opa-envoy)"
#   (scripts/install-hydra.sh and scripts/install-oathkeeper.sh are the same.)
#
# The version and the whole dependency graph are pinned by a small Go module
# of ours, tests/<name>/go.mod + go.sum (a `tool` directive). The binary goes
# to a cache directory keyed by the version and a hash of that go.mod, go.sum
# and the build flags, so a change to any of them builds anew:
#   ${ORY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hydra-authz}/<name>-<version>-<hash>/<name>
#
# Environment:
#   ORY_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/hydra-authz)
#   GO             go command (default: go; needs Go >= 1.24 for `tool`)
#
# Idempotent: if the cached binary exists and reports the pinned version,
# nothing is built. Concurrent callers wait on a lock and share one build.
# The binary path is the ONLY thing written to stdout; everything else goes
# to stderr. A cold build takes minutes on 2 cores (see tests/hydra/FINDINGS.md).
set -euo pipefail

name="${1:-}"
# What `<bin> version` must print, when it is not the version itself.
reports=""
case "${name}" in
hydra)
    version="v2.3.0"
    pkg="github.com/ory/hydra/v2"
    # cgo + sqlite so that DSN=memory works (as Hydra's own Dockerfile builds).
    cgo=1
    tags="sqlite,sqlite_omit_load_extension"
    ldflags="-X github.com/ory/hydra/v2/driver/config.Version=${version}"
    ;;
oathkeeper)
    version="v0.40.9"
    pkg="github.com/ory/oathkeeper"
    # Oathkeeper needs no database; its Makefile builds with CGO_ENABLED=0.
    cgo=0
    tags=""
    ldflags="-X github.com/ory/oathkeeper/x.Version=${version}"
    ;;
opa-envoy)
    # Not Ory, built the same way: OPA-Envoy, the peer issue 15 names
    # (scripts/bench-peers.sh). v1.0.0-envoy is the version the module proxy
    # serves (the newer tags are refused with 403); the checksum database
    # does not list it, so its go.sum line was recorded with
    # GONOSUMDB=github.com/open-policy-agent/opa-envoy-plugin and is the pin.
    version="v1.0.0-envoy"
    reports="Version: 1.0.0"
    pkg="github.com/open-policy-agent/opa-envoy-plugin/cmd/opa-envoy-plugin"
    # Without cgo OPA builds without its WebAssembly engine, which the
    # Rego policy does not use.
    cgo=0
    tags=""
    ldflags=""
    ;;
*)
    echo "usage: $0 hydra|oathkeeper|opa-envoy" >&2
    exit 2
    ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/.." && pwd)"
mod_dir="${repo_dir}/tests/${name}"
go="${GO:-go}"
cache_root="${ORY_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/hydra-authz}"

for f in go.mod go.sum; do
    if [[ ! -f "${mod_dir}/${f}" ]]; then
        echo "install-ory: ${mod_dir}/${f} is missing" >&2
        exit 1
    fi
done

key="$(cat "${mod_dir}/go.mod" "${mod_dir}/go.sum" \
    <(printf '%s\n' "${pkg}" "${cgo}" "${tags}" "${ldflags}") |
    sha256sum | cut -c1-12)"
out_dir="${cache_root}/${name}-${version}-${key}"
bin="${out_dir}/${name}"

# Succeeds if the binary runs and reports the pinned version.
bin_ok() {
    local out
    out="$("$1" version 2>/dev/null)" || return 1
    [[ "${out}" == *"${reports:-${version}}"* ]]
}

if [[ -x "${bin}" ]] && bin_ok "${bin}"; then
    echo "install-ory: using existing ${bin}" >&2
    printf '%s\n' "${bin}"
    exit 0
fi

if ! command -v "${go}" >/dev/null 2>&1; then
    echo "install-ory: '${go}' not found; Go >= 1.24 is needed to build ${name}" >&2
    exit 1
fi
if [[ "${cgo}" == 1 ]] && ! command -v "${CC:-gcc}" >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
    echo "install-ory: ${name} is built with cgo (sqlite); install a C compiler (apt-get install gcc)" >&2
    exit 1
fi

mkdir -p "${out_dir}"
# One build at a time per cache entry; a waiting caller then finds the binary.
exec 9>"${out_dir}/.lock"
flock 9
if [[ -x "${bin}" ]] && bin_ok "${bin}"; then
    echo "install-ory: using existing ${bin}" >&2
    printf '%s\n' "${bin}"
    exit 0
fi

echo "install-ory: building ${pkg}@${version} into ${out_dir} (takes minutes)" >&2
start=${SECONDS}
tmp="${out_dir}/.${name}.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
# -mod=readonly: go.sum is the pin; a build that would change it fails.
# GOFLAGS from the caller is cleared so that e.g. -mod=vendor can't interfere.
GOFLAGS="" CGO_ENABLED="${cgo}" "${go}" build -C "${mod_dir}" -mod=readonly -trimpath \
    ${tags:+-tags "${tags}"} -ldflags "${ldflags}" -o "${tmp}" "${pkg}" >&2
if ! bin_ok "${tmp}"; then
    echo "install-ory: built ${name} does not run or is not version ${version}" >&2
    "${tmp}" version >&2 || true
    exit 1
fi
mv -f "${tmp}" "${bin}"
echo "install-ory: built ${bin} in $((SECONDS - start))s" >&2
printf '%s\n' "${bin}"
