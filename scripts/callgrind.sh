#!/usr/bin/env bash
# Instructions per check, counted by valgrind's callgrind, for three kinds
# of check at two commits, and the difference: a regression shows without
# timing noise (instruction counts repeat to a fraction of a percent on
# shared machines where timings move by tens of percent).
#
# Usage: scripts/callgrind.sh [BASE [HEAD]]
#   BASE, HEAD   commits (anything git rev-parse takes), or "." for the
#                working tree. Defaults: BASE = HEAD (the last commit),
#                HEAD = "." (your uncommitted changes).
#   CALLGRIND_CHECKS=N   checks per measurement (default 2000)
#   CALLGRIND_LOG_FORMAT=json   count the Helm chart's JSON lines instead of
#                config/'s pretty ones (both commits must have
#                `instructions --log-format`, 2026-11-30 or later)
#   CALLGRIND_LOG_LEVEL=warn   count the check without its decision line
#                (both commits must have `instructions --log-level`)
#
# Each side is built in release (a commit in a temporary git worktree,
# target dir target/callgrind, shared between commits), then
#   authz-bench instructions --case C --checks 0   and   --checks N
# run under callgrind; (Ir(N) - Ir(0)) / N is the cost of one check, so
# start-up and the warm-up check cancel. Cases: cached-allow (row b's
# check), deny-before-introspection (no credentials: 401), uncached-allow
# (cache off: the in-process issuer's work over loopback HTTP counts too).
# Every check goes through the real gRPC service function at the shipped
# log settings; only the socket is left out. Commits before the
# `instructions` subcommand (2026-11-29) cannot be measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
base="${1:-HEAD}"
head="${2:-.}"
checks="${CALLGRIND_CHECKS:-2000}"
format_args=()
if [[ -n "${CALLGRIND_LOG_FORMAT:-}" ]]; then
    format_args=(--log-format "${CALLGRIND_LOG_FORMAT}")
fi
if [[ -n "${CALLGRIND_LOG_LEVEL:-}" ]]; then
    format_args+=(--log-level "${CALLGRIND_LOG_LEVEL}")
fi
cases=(cached-allow deny-before-introspection uncached-allow)

command -v valgrind >/dev/null || {
    echo "callgrind: valgrind is not installed (Debian: apt-get install valgrind)" >&2
    exit 1
}
tmp="$(mktemp -d)"
cleanup() {
    for w in "${tmp}"/wt-*; do
        [[ -d "$w" ]] && git -C "${repo}" worktree remove --force "$w" >/dev/null 2>&1 || true
    done
    rm -rf "${tmp}"
}
trap cleanup EXIT

# Build authz-bench at $1 and print the path of a copy of the binary.
build() {
    local rev="$1" dir target out
    if [[ "$rev" == "." ]]; then
        dir="${repo}"
        target="${CARGO_TARGET_DIR:-${repo}/target}"
    else
        local sha
        sha="$(git rev-parse --verify --quiet "${rev}^{commit}")" || {
            echo "callgrind: not a commit: ${rev}" >&2
            exit 1
        }
        dir="${tmp}/wt-${sha}"
        git worktree add --detach --force "${dir}" "${sha}" >/dev/null 2>&1
        target="${repo}/target/callgrind"
    fi
    echo "callgrind: building authz-bench at ${rev} ..." >&2
    (cd "${dir}" && CARGO_TARGET_DIR="${target}" cargo build --release --locked -p authz-bench >&2)
    out="${tmp}/authz-bench-$(echo "${rev}" | tr -c 'A-Za-z0-9' '_')"
    cp "${target}/release/authz-bench" "${out}"
    if ! "${out}" instructions --help >/dev/null 2>&1; then
        echo "callgrind: authz-bench at ${rev} has no 'instructions' subcommand (older than this script)" >&2
        exit 1
    fi
    printf '%s\n' "${out}"
}

# Total instructions of one run: $1 binary, $2 case, $3 checks.
instructions() {
    local f="${tmp}/cg.out"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$1" instructions --case "$2" --checks "$3" "${format_args[@]}" \
        >/dev/null 2>"${tmp}/cg.err" || {
        echo "callgrind: $1 --case $2 --checks $3 failed:" >&2
        tail -n 20 "${tmp}/cg.err" >&2
        exit 1
    }
    awk '/^summary:/ {print $2}' "$f"
}

# Instructions per check: $1 binary, $2 case.
per_check() {
    local zero n
    zero="$(instructions "$1" "$2" 0)"
    n="$(instructions "$1" "$2" "${checks}")"
    echo $(((n - zero) / checks))
}

base_bin="$(build "${base}")"
head_bin="$(build "${head}")"
echo
echo "instructions per check (valgrind callgrind, ${checks} checks, log settings: ${CALLGRIND_LOG_LEVEL:-info}, ${CALLGRIND_LOG_FORMAT:-pretty})"
printf '%-28s %14s %14s %9s\n' "case" "${base}" "${head}" "change"
for c in "${cases[@]}"; do
    a="$(per_check "${base_bin}" "$c")"
    b="$(per_check "${head_bin}" "$c")"
    change="$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == 0) print "n/a"; else printf "%+.1f%%", (b - a) * 100 / a }')"
    printf '%-28s %14s %14s %9s\n' "$c" "$a" "$b" "${change}"
done
