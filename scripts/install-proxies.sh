#!/usr/bin/env bash
# Make a real nginx or Caddy available for the forward-auth kits
# (deploy/nginx, deploy/caddy; deploy/tests/test_forward_auth_kits.py and the
# Rust end-to-end tests), or a real Redis for the fleet's integration tests
# ([cluster]: pub/sub purges, shared L2 cache; the tests start redis-server on
# loopback themselves), and print the directory to put first on PATH.
#
# Usage:  nginx_dir="$(scripts/install-proxies.sh nginx)"
#         [[ -z "${nginx_dir}" ]] || export PATH="${nginx_dir}:${PATH}"
#         caddy_dir="$(scripts/install-proxies.sh caddy)"   # likewise
#         redis_dir="$(scripts/install-proxies.sh redis)"   # likewise
#
# When a suitable one is already on PATH, nothing is installed and nothing is
# printed. Suitable means: nginx >= 1.19.5 (for `-e stderr`) built with
# ngx_http_auth_request_module (`nginx -V`); Caddy v2.5 or newer (forward_auth);
# redis-server >= 6.2 (`redis-server --version`) with redis-cli beside it.
# Otherwise Debian's package is fetched with `apt-get download` and unpacked
# (dpkg-deb -x, no maintainer scripts: no service started or enabled, no
# user created, no root needed) into a private directory, and the path of
# its bin/ is printed. Debian 12 ships nginx 1.22.1 (package `nginx`, which
# holds the binary; nginx-common only holds /etc/nginx, which the kit does not
# use), Caddy 2.6.2 and Redis 7.0.15. Debian's redis-server package only holds
# the symlink /usr/bin/redis-server -> redis-check-rdb: the one Redis binary
# (and redis-cli) is in redis-tools, which is what gets unpacked. That binary
# picks its mode from argv[0] (a name containing redis-check-rdb runs the RDB
# checker), so bin/redis-server is a symlink or wrapper named redis-server.
# Run-time libraries are normally installed already (libc, libssl3, libpcre2,
# zlib, libcrypt; libzstd for Caddy; libsystemd0, libatomic1 for Redis); any
# that is missing (on a bare machine, Redis's libjemalloc2 and liblzf1) is
# unpacked beside the binary and bin/ gets a wrapper that sets
# LD_LIBRARY_PATH. Only that path goes to stdout; messages go to stderr.
# Idempotent.
#
# Environment:
#   PROXIES_DIR  where to unpack (default: <repo>/.venv-deploy, beside the
#                deploy tests' venv, which git ignores); the proxy goes to
#                PROXIES_DIR/<name>
set -euo pipefail

usage() { echo "usage: $0 nginx|caddy|redis" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
name="$1"
# commands: what bin/ provides, as <command>=<binary in the package>; the
# first is the one `proxy_ok` and the diagnostics run.
case "${name}" in
    nginx) packages=(nginx) commands=(nginx=usr/sbin/nginx) ;;
    caddy) packages=(caddy) commands=(caddy=usr/bin/caddy) ;;
    redis)
        packages=(redis-tools)
        commands=(redis-server=usr/bin/redis-check-rdb redis-cli=usr/bin/redis-cli)
        ;;
    *) usage ;;
esac

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "${script_dir}/.." && pwd)"
dest="${PROXIES_DIR:-${repo_dir}/.venv-deploy}/${name}"
bin_dir="${dest}/bin"
log() { echo "install-proxies: $*" >&2; }

# Succeeds if `$1/<name>` (or <name> on PATH when $1 is empty) runs and is
# suitable for the kit.
proxy_ok() {
    local prefix="${1:+$1/}" out
    case "${name}" in
        nginx)
            out="$("${prefix}nginx" -V 2>&1)" || return 1
            [[ "${out}" == *--with-http_auth_request_module* ]] || return 1
            [[ "${out}" =~ nginx/([0-9]+)\.([0-9]+)\.([0-9]+) ]] || return 1
            local v=$((BASH_REMATCH[1] * 1000000 + BASH_REMATCH[2] * 1000 + BASH_REMATCH[3]))
            ((v >= 1019005))
            ;;
        caddy)
            out="$("${prefix}caddy" version 2>&1)" || return 1
            [[ "${out}" =~ ^v?2\.([0-9]+)\. ]] && ((BASH_REMATCH[1] >= 5))
            ;;
        redis)
            # "Redis server v=7.0.15 sha=...": only a binary run as
            # redis-server says so (as redis-check-rdb it prints its own).
            out="$("${prefix}redis-server" --version 2>&1)" || return 1
            [[ "${out}" =~ ^Redis\ server\ v=([0-9]+)\.([0-9]+)\. ]] || return 1
            ((BASH_REMATCH[1] > 6 || (BASH_REMATCH[1] == 6 && BASH_REMATCH[2] >= 2))) || return 1
            "${prefix}redis-cli" --version >/dev/null 2>&1
            ;;
    esac
}

if proxy_ok ""; then
    exit 0
fi
if [[ -d "${bin_dir}" ]] && proxy_ok "${bin_dir}"; then
    printf '%s\n' "$(cd "${bin_dir}" && pwd -P)"
    exit 0
fi

command -v apt-get >/dev/null || {
    log "no suitable ${name} on PATH and no apt-get; install ${name} (see deploy/${name}/README.md) and put it on PATH"
    exit 1
}
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
# As root, apt-get download warns that the _apt user cannot write to ${tmp};
# the download works all the same, hence the quiet stderr.
download() { (cd "${tmp}" && apt-get download -qq "$@" >/dev/null 2>&1); }
if ! download "${packages[@]}"; then
    # A fresh machine may have no package lists yet.
    if [[ "$(id -u)" -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >&2
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq >&2
    fi
    download "${packages[@]}" || {
        log "apt-get download ${packages[*]} failed"
        exit 1
    }
fi
rm -rf "${dest}"
mkdir -p "${bin_dir}"
for deb in "${tmp}"/*.deb; do
    log "unpacking $(basename "${deb}") into ${dest}"
    dpkg-deb -x "${deb}" "${dest}"
done
for command in "${commands[@]}"; do
    binary="${command#*=}"
    [[ -x "${dest}/${binary}" ]] || {
        log "${packages[*]} has no ${binary}"
        exit 1
    }
done

# Shared libraries the binary needs but this machine lacks: their Debian
# packages are unpacked beside it.
declare -A lib_package=(
    [libpcre2-8.so.0]=libpcre2-8-0 [libssl.so.3]=libssl3 [libcrypto.so.3]=libssl3
    [libz.so.1]=zlib1g [libcrypt.so.1]=libcrypt1 [libzstd.so.1]=libzstd1
    [libjemalloc.so.2]=libjemalloc2 [liblzf.so.1]=liblzf1
    [libsystemd.so.0]=libsystemd0 [libatomic.so.1]=libatomic1
)
missing=()
if command -v ldd >/dev/null; then
    for command in "${commands[@]}"; do
        binary="${command#*=}"
        while read -r soname; do
            pkg="${lib_package[${soname}]:-}"
            [[ -n "${pkg}" ]] || { log "${binary} needs ${soname}, which is not installed"; exit 1; }
            [[ " ${missing[*]} " == *" ${pkg} "* ]] || missing+=("${pkg}")
        done < <(ldd "${dest}/${binary}" 2>/dev/null | awk '$2 == "=>" && $3 == "not" {print $1}')
    done
fi
lib_path=""
if ((${#missing[@]})); then
    rm -f "${tmp}"/*.deb
    download "${missing[@]}" || { log "apt-get download ${missing[*]} failed"; exit 1; }
    for deb in "${tmp}"/*.deb; do
        log "unpacking $(basename "${deb}") into ${dest} (run-time library)"
        dpkg-deb -x "${deb}" "${dest}"
    done
    # find fails when one of the two is absent (the packages may only have
    # usr/lib); pipefail would then end the script.
    lib_path="$(find "${dest}/lib" "${dest}/usr/lib" -maxdepth 1 -type d -name '*-linux-gnu' 2>/dev/null | paste -sd: || true)"
    [[ -n "${lib_path}" ]] || { log "no run-time library directory in ${missing[*]}"; exit 1; }
fi
for command in "${commands[@]}"; do
    cmd="${command%%=*}" binary="${command#*=}"
    if [[ -n "${lib_path}" ]]; then
        # A wrapper, not a symlink: the libraries are found through
        # LD_LIBRARY_PATH. When the command is not the binary's own name
        # (redis-server), argv[0] is set to it: bash, as dash's exec has no -a.
        if [[ "${cmd}" == "$(basename "${binary}")" ]]; then
            shell=/bin/sh exec_as=""
        else
            shell=/bin/bash exec_as="-a ${cmd} "
        fi
        cat >"${bin_dir}/${cmd}" <<EOF
#!${shell}
# Written by scripts/install-proxies.sh: run-time libraries unpacked beside it.
LD_LIBRARY_PATH="${lib_path}\${LD_LIBRARY_PATH:+:\${LD_LIBRARY_PATH}}" exec ${exec_as}"${dest}/${binary}" "\$@"
EOF
        chmod +x "${bin_dir}/${cmd}"
    else
        # Invoked through it, the binary gets argv[0] .../bin/<cmd>.
        ln -s "../${binary}" "${bin_dir}/${cmd}"
    fi
done

if ! proxy_ok "${bin_dir}"; then
    first="${commands[0]%%=*}"
    log "${bin_dir}/${first} does not run or is not suitable:"
    case "${name}" in
        nginx) version_args=(-V) ;;
        caddy) version_args=(version) ;;
        redis) version_args=(--version) ;;
    esac
    "${bin_dir}/${first}" "${version_args[@]}" >&2 || true
    exit 1
fi
printf '%s\n' "$(cd "${bin_dir}" && pwd -P)"
