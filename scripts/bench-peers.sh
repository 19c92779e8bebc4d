#!/usr/bin/env bash
# hydra-authz side by side with Ory Oathkeeper v0.40.9 and OPA-Envoy
# v1.0.0-envoy (issue 15, part 3):
# the same real Ory Hydra v2.3.0, the same Envoy, the same upstream, the same
# load, one run on one machine. Prints a markdown table on stdout (progress
# and the location of the temp files on stderr).
#
#   scripts/bench-peers.sh [--duration-s 10] [--threads 2] [--connections 32]
#                          [--rate 200] [--rate-duration-s 10] [--no-http-rows]
#                          [--rows slug,slug,...]
#   scripts/bench-peers.sh --check-only   (the seed cases per row, no load)
#
# Rows (each with a fresh Envoy and a fresh authorizer; Hydra and the
# upstream run for the whole script):
#   baseline        Envoy -> upstream, no ext_authz (run first and last)
#   hydra-authz     gRPC ext_authz (deploy/envoy/envoy.yaml), cache off / on
#   hydra-authz     http_service ext_authz (deploy/envoy/envoy-http-service.yaml),
#                   cache off / on (same transport as Oathkeeper; --no-http-rows skips)
#   Oathkeeper      http_service ext_authz to its /decisions API (the shape of
#                   envoy-http-service.yaml), cache off / on
#   OPA-Envoy       gRPC ext_authz (deploy/envoy/envoy.yaml) to OPA's Envoy
#                   plugin with tests/opa-envoy/policy.rego (introspection by
#                   http.send), cache off / on (http.send's force_cache, 60 s)
# --rows runs the named rows in that order instead (slugs: baseline-first,
# ha-grpc-off, ok-off, ha-http-off, ha-grpc-on, ok-on, opa-off, opa-on,
# ha-http-on, baseline-last; a slug may repeat), e.g. to see whether a row's
# place in the run (a cold Hydra) moves its figures.
# Before the first row Hydra is warmed up with 3 s of introspections.
# Per row: the seed cases through Envoy with curl (the "correct" column),
# 2 s of warm-up, then `wrk --latency` for --duration-s (closed loop, at
# saturation), then a paced open-loop run at --rate req/s (latency measured
# from each request's scheduled send time).
# Introspections per request: Hydra's own Prometheus counter
# (http_requests_duration_seconds_count{endpoint="/admin/oauth2/introspect"})
# read before and after the wrk run, divided by wrk's request count.
#
# Needs: wrk, curl, python3, go (builds the echo upstream; Hydra, Oathkeeper and
# OPA-Envoy come from scripts/install-{hydra,oathkeeper,opa-envoy}.sh, Envoy
# from install-envoy.sh).
# hydra-authz: $BENCH_HYDRA_AUTHZ_BIN, else built with cargo (release).
# Everything binds 127.0.0.1 on free ports; Hydra and Oathkeeper run with
# telemetry off (--sqa-opt-out), OPA with --disable-telemetry; every process
# is killed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

duration=10 threads=2 connections=32 rate=200 rate_duration=10 http_rows=1 check_only=0 only_rows=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --duration-s) duration="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --rate-duration-s) rate_duration="$2"; shift 2 ;;
    --no-http-rows) http_rows=0; shift ;;
    --rows) only_rows="$2"; shift 2 ;;
    --check-only) check_only=1; shift ;;
    -h | --help) sed -n '2,43p' "$0"; exit 0 ;;
    *) echo "bench-peers: unknown argument $1" >&2; exit 2 ;;
    esac
done

# The rows, by slug (--rows), checked before anything starts.
declare -A row_label=(
    [baseline-first]="Envoy → upstream, no ext_authz (baseline, first)|baseline|-"
    [ha-grpc-off]="Envoy + hydra-authz (gRPC), cache off|grpc|false"
    [ok-off]="Envoy + Oathkeeper (http_service), cache off|oathkeeper|false"
    [ha-http-off]="Envoy + hydra-authz (http_service), cache off|http|false"
    [ha-grpc-on]="Envoy + hydra-authz (gRPC), cache on (60 s)|grpc|true"
    [ok-on]="Envoy + Oathkeeper (http_service), cache on (60 s)|oathkeeper|true"
    [opa-off]="Envoy + OPA-Envoy (gRPC, Rego http.send), cache off|opa|false"
    [opa-on]="Envoy + OPA-Envoy (gRPC, Rego http.send), cache on (60 s)|opa|true"
    [ha-http-on]="Envoy + hydra-authz (http_service), cache on (60 s)|http|true"
    [baseline-last]="Envoy → upstream, no ext_authz (baseline, last)|baseline|-"
)
if [[ -n "$only_rows" ]]; then
    IFS=',' read -r -a order <<<"$only_rows"
else
    order=(baseline-first ha-grpc-off ok-off)
    ((http_rows)) && order+=(ha-http-off)
    order+=(ha-grpc-on ok-on opa-off opa-on)
    ((http_rows)) && order+=(ha-http-on)
    order+=(baseline-last)
fi
for slug in "${order[@]}"; do
    [[ -n "${row_label[$slug]:-}" ]] || { echo "bench-peers: unknown row ${slug} (see --help)" >&2; exit 2; }
done
for tool in wrk curl python3 go envsubst; do
    command -v "$tool" >/dev/null || { echo "bench-peers: $tool not found" >&2; exit 1; }
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")"
echo "bench-peers: temp files (configs, logs, raw wrk output) in ${tmp}" >&2

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench-peers: $*" >&2; }
die() { echo "bench-peers: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL PID [SECONDS]: until URL answers 200 (bounded), PID must live.
wait_http() {
    local url="$1" pid="$2" deadline=$((SECONDS + ${3:-30}))
    until [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)" == 200 ]]; do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited while waiting for $url (logs in $tmp)"
        ((SECONDS < deadline)) || die "timed out waiting for $url (logs in $tmp)"
        sleep 0.1
    done
}

# stop PID: kill one process we started and wait for it (bounded).
stop() {
    local pid="$1" i
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${pids[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# ---------------------------------------------------------------- binaries
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
HYDRA_BIN="${HYDRA_BIN:-$(scripts/install-hydra.sh)}"
OATHKEEPER_BIN="${OATHKEEPER_BIN:-$(scripts/install-oathkeeper.sh)}"
OPA_ENVOY_BIN="${OPA_ENVOY_BIN:-$(scripts/install-opa-envoy.sh)}"
# The OPA policy's own unit tests (tests/opa-envoy/policy_test.rego) first.
"${OPA_ENVOY_BIN}" test tests/opa-envoy/ >&2 || die "tests/opa-envoy: the policy's tests fail"
if [[ -z "${BENCH_HYDRA_AUTHZ_BIN:-}" ]]; then
    cargo build --release --locked -p hydra-authz --bins >&2
    BENCH_HYDRA_AUTHZ_BIN="${repo}/target/release/hydra-authz"
fi
[[ -x "${BENCH_HYDRA_AUTHZ_BIN}" ]] || die "no hydra-authz binary at ${BENCH_HYDRA_AUTHZ_BIN}"

# The echo upstream: Go net/http (a Python server would be the bottleneck),
# 200 for any method, the request headers echoed as JSON (not authorization).
mkdir -p "${tmp}/upstream"
cat >"${tmp}/upstream/main.go" <<'EOF'
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := map[string]string{}
		for k, v := range r.Header {
			if k != "Authorization" {
				h[strings.ToLower(k)] = strings.Join(v, ",")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.Path, "headers": h})
	})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {
		panic(err)
	}
}
EOF
(cd "${tmp}/upstream" && GOFLAGS="" GOTOOLCHAIN=local CGO_ENABLED=0 go build -o upstream main.go) >&2

# A paced (open-loop) client: requests scheduled at a fixed rate, latency
# measured from the scheduled time (no coordinated omission), keep-alive.
cat >"${tmp}/paced.py" <<'EOF'
import http.client, sys, threading, time
host, port, path, token, rate, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
total = int(rate * secs)
lat, errors, lock, nxt = [], [0], threading.Lock(), [0]
t0 = time.perf_counter() + 0.2
def worker():
    conn = http.client.HTTPConnection(host, port, timeout=5)
    while True:
        with lock:
            k = nxt[0]; nxt[0] += 1
        if k >= total:
            return
        due = t0 + k / rate
        d = due - time.perf_counter()
        if d > 0:
            time.sleep(d)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            r = conn.getresponse(); r.read()
            ok = r.status == 200
        except Exception:
            conn.close(); conn = http.client.HTTPConnection(host, port, timeout=5); ok = False
        done = time.perf_counter()
        with lock:
            lat.append(done - due)
            if not ok:
                errors[0] += 1
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print("%.2f %.2f %d %d" % (q(0.50), q(0.99), len(lat), errors[0]))
EOF

# --------------------------------------------------------------- Hydra
hydra_public=$(free_port) hydra_admin=$(free_port)
hydra_admin_url="http://127.0.0.1:${hydra_admin}"
hydra_issuer="http://127.0.0.1:${hydra_public}/"
env -i PATH="$PATH" HOME="$tmp" DSN=memory SQA_OPT_OUT=true \
    SECRETS_SYSTEM=bench-peers-system-secret-0123456789 \
    URLS_SELF_ISSUER="${hydra_issuer}" URLS_SELF_ADMIN="${hydra_admin_url}" \
    SERVE_PUBLIC_PORT="${hydra_public}" SERVE_ADMIN_PORT="${hydra_admin}" \
    SERVE_PUBLIC_HOST=127.0.0.1 SERVE_ADMIN_HOST=127.0.0.1 LOG_LEVEL=warn \
    "${HYDRA_BIN}" serve all --dev --sqa-opt-out >"${tmp}/hydra.log" 2>&1 &
hydra_pid=$!
pids+=("$hydra_pid")
wait_http "${hydra_issuer}health/ready" "$hydra_pid"
wait_http "${hydra_admin_url}/health/ready" "$hydra_pid"
log "Hydra up (public ${hydra_public}, admin ${hydra_admin})"

hydra_cli() { env -i PATH="$PATH" HOME="$tmp" SQA_OPT_OUT=true "${HYDRA_BIN}" "$@"; }
json_get() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
create_client() { # scope -> "id secret"
    local j
    j="$(hydra_cli create oauth2-client --endpoint "${hydra_admin_url}" \
        --grant-type client_credentials --scope "$1" --format json)"
    echo "$(json_get client_id <<<"$j") $(json_get client_secret <<<"$j")"
}
token() { # id secret scope
    curl -sf -u "$1:$2" -d grant_type=client_credentials -d "scope=$3" \
        "${hydra_issuer}oauth2/token" | json_get access_token
}
reader="$(create_client read_date)" writer="$(create_client post_echo)"
read -r reader_id reader_secret <<<"$reader"
read -r writer_id writer_secret <<<"$writer"
reader_token="$(token "$reader_id" "$reader_secret" read_date)"
writer_token="$(token "$writer_id" "$writer_secret" post_echo)"
[[ -n "$reader_token" && -n "$writer_token" ]] || die "no tokens from Hydra (log: ${tmp}/hydra.log)"
log "clients: reader ${reader_id} (read_date), writer ${writer_id} (post_echo)"

# Hydra warmed up before any row: 3 s of introspections straight to its
# admin API (wrk, POST). Without it the first introspecting row pays for a
# cold Hydra (its paced p50 read 8.3 ms first in the run, 4.9-5.3 ms later
# in the same run, 2026-11-30), which says where a row sits, not how the
# authorizer behind it does.
cat >"${tmp}/introspect.lua" <<EOF
wrk.method = "POST"
wrk.body = "token=${reader_token}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF
if ((!check_only)); then
    wrk -t "$threads" -c 8 -d 3s -s "${tmp}/introspect.lua" "${hydra_admin_url}/admin/oauth2/introspect" >"${tmp}/hydra-warm-up.txt"
    log "Hydra warmed up: $(awk '/^Requests\/sec:/ { printf "%.0f introspections/s", $2 }' "${tmp}/hydra-warm-up.txt")"
fi

introspections() {
    curl -s "${hydra_admin_url}/admin/metrics/prometheus" | awk '
        /^http_requests_duration_seconds_count/ && /endpoint="\/admin\/oauth2\/introspect"/ { n += $NF }
        END { printf "%d\n", n }'
}

# ------------------------------------------------------------- upstream
upstream_port=$(free_port)
"${tmp}/upstream/upstream" "127.0.0.1:${upstream_port}" >"${tmp}/upstream.log" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
wait_http "http://127.0.0.1:${upstream_port}/" "$upstream_pid"

# ------------------------------------------------------------- Envoy configs
# Ports appear once each as `port_value: N` in the shipped files.
envoy_cfg() { # kind out listen admin authz_port [authz_http_port]
    local kind="$1" out="$2" listen="$3" admin="$4" authz="${5:-0}" authz_http="${6:-0}"
    case "$kind" in
    grpc)
        sed -e "s/port_value: 9901$/port_value: ${admin}/" -e "s/port_value: 8080$/port_value: ${listen}/" \
            -e "s/port_value: 9191$/port_value: ${authz}/" -e "s/port_value: 9192$/port_value: ${authz_http}/" \
            -e "s/port_value: 8081$/port_value: ${upstream_port}/" deploy/envoy/envoy.yaml >"$out" ;;
    http)
        sed -e "s/port_value: 9902$/port_value: ${admin}/" -e "s/port_value: 8080$/port_value: ${listen}/" \
            -e "s/port_value: 9194$/port_value: ${authz}/" -e "s/port_value: 8081$/port_value: ${upstream_port}/" \
            deploy/envoy/envoy-http-service.yaml >"$out" ;;
    oathkeeper)
        # Oathkeeper's decision API: GET /decisions/date asks about GET
        # http://<host>/date; its header mutator sets X-Client-Id, X-User, X-Scope.
        sed -e "s/port_value: 9902$/port_value: ${admin}/" -e "s/port_value: 8080$/port_value: ${listen}/" \
            -e "s/port_value: 9194$/port_value: ${authz}/" -e "s/port_value: 8081$/port_value: ${upstream_port}/" \
            -e "s|path_prefix: /ext-authz|path_prefix: /decisions|" -e "s|uri: http://hydra-authz|uri: http://oathkeeper|" \
            -e "s/x-scopes$/x-scope/" -e "s/x-subject$/x-user/" \
            deploy/envoy/envoy-http-service.yaml >"$out" ;;
    baseline)
        # envoy-http-service.yaml without its ext_authz filter.
        sed -e "s/port_value: 9902$/port_value: ${admin}/" -e "s/port_value: 8080$/port_value: ${listen}/" \
            -e "s/port_value: 9194$/port_value: $(free_port)/" -e "s/port_value: 8081$/port_value: ${upstream_port}/" \
            -e '/# External authorization over HTTP\./,/# Terminal filter/{/# Terminal filter/!d}' \
            deploy/envoy/envoy-http-service.yaml >"$out" ;;
    esac
    grep -q "port_value: ${listen}$" "$out" || die "port rewrite failed in $out"
}

# ------------------------------------------------------------- authorizers
authz_pid=""
start_hydra_authz() { # name cache(true|false) -> sets authz_pid authz_grpc authz_http authz_fa
    authz_grpc=$(free_port) authz_http=$(free_port) authz_fa=$(free_port)
    cat >"${tmp}/$1.toml" <<EOF
# As config/hydra-authz.toml (the seed rules, log info pretty), on free ports.
[server]
grpc_addr = "127.0.0.1:${authz_grpc}"
http_addr = "127.0.0.1:${authz_http}"

[introspection]
url = "${hydra_admin_url}/admin/oauth2/introspect"

[introspection.cache]
enabled = $2
ttl_ms = 60000

[[rules]]
id = "read-date"
methods = ["GET"]
path = "/date"
scopes = ["read_date"]

[[rules]]
id = "post-echo"
methods = ["POST"]
path = "/echo"
scopes = ["post_echo"]

[forward_auth]
addr = "127.0.0.1:${authz_fa}"
envoy_path_prefix = "/ext-authz"

[log]
format = "pretty"
level = "info"
EOF
    env -i PATH="$PATH" HOME="$tmp" "${BENCH_HYDRA_AUTHZ_BIN}" --config "${tmp}/$1.toml" serve >"${tmp}/$1.log" 2>&1 &
    authz_pid=$!
    pids+=("$authz_pid")
    wait_http "http://127.0.0.1:${authz_http}/readyz" "$authz_pid"
}

start_oathkeeper() { # name cache(true|false) -> sets authz_pid authz_api
    authz_api=$(free_port)
    OATHKEEPER_API_PORT="${authz_api}" OATHKEEPER_PROXY_PORT=$(free_port) \
        OATHKEEPER_METRICS_PORT=$(free_port) HYDRA_ADMIN_URL="${hydra_admin_url}" \
        RULES_PATH="${repo}/tests/oathkeeper/rules.json" \
        envsubst '${OATHKEEPER_API_PORT} ${OATHKEEPER_PROXY_PORT} ${OATHKEEPER_METRICS_PORT} ${HYDRA_ADMIN_URL} ${RULES_PATH}' \
        <tests/oathkeeper/config.yaml.tmpl >"${tmp}/$1.yaml"
    if [[ "$2" == true ]]; then
        sed -i -e 's/# No cache: .*/# Cache on (bench-peers.sh): a verdict is kept 60 s./' \
            -e '/^      cache:$/,/enabled: false/{s/^        enabled: false$/        enabled: true\n        ttl: 60s/}' "${tmp}/$1.yaml"
        grep -q '^        ttl: 60s$' "${tmp}/$1.yaml" || die "could not turn Oathkeeper's cache on"
    fi
    env -i PATH="$PATH" HOME="$tmp" SQA_OPT_OUT=true \
        "${OATHKEEPER_BIN}" serve --sqa-opt-out --config "${tmp}/$1.yaml" >"${tmp}/$1.log" 2>&1 &
    authz_pid=$!
    pids+=("$authz_pid")
    wait_http "http://127.0.0.1:${authz_api}/health/ready" "$authz_pid"
}

start_opa() { # name cache(true|false) -> sets authz_pid authz_opa_grpc
    authz_opa_grpc=$(free_port)
    local api
    api=$(free_port)
    OPA_GRPC_ADDR="127.0.0.1:${authz_opa_grpc}" envsubst '${OPA_GRPC_ADDR}' \
        <tests/opa-envoy/config.yaml >"${tmp}/$1.yaml"
    env -i PATH="$PATH" HOME="$tmp" \
        HYDRA_INTROSPECT_URL="${hydra_admin_url}/admin/oauth2/introspect" \
        HYDRA_INTROSPECT_CACHE_S="$([[ "$2" == true ]] && echo 60 || echo 0)" \
        "${OPA_ENVOY_BIN}" run --server --addr "127.0.0.1:${api}" --disable-telemetry \
        --config-file "${tmp}/$1.yaml" "${repo}/tests/opa-envoy/policy.rego" >"${tmp}/$1.log" 2>&1 &
    authz_pid=$!
    pids+=("$authz_pid")
    wait_http "http://127.0.0.1:${api}/health?plugins" "$authz_pid"
}

start_envoy() { # cfg -> sets envoy_pid
    "${ENVOY_BIN}" -c "$1" --log-level error --disable-hot-restart --concurrency 1 \
        >"${1%.yaml}.envoy.log" 2>&1 &
    envoy_pid=$!
    pids+=("$envoy_pid")
    wait_http "http://127.0.0.1:${envoy_admin}/ready" "$envoy_pid"
}

# ------------------------------------------------------------- one row
# The seed cases through Envoy: "ok/total" and the answers.
correctness() { # listen -> sets correct correct_detail
    local base="http://127.0.0.1:$1" got n=0 ok=0 detail=()
    check() { # label want got
        n=$((n + 1))
        if [[ "$3" == "$2" ]]; then ok=$((ok + 1)); detail+=("$1 $3"); else detail+=("$1 **$3** (want $2)"); fi
    }
    local body code cid
    body="$(curl -s -m 5 -w '\n%{http_code}' -H "Authorization: Bearer ${reader_token}" "${base}/date")"
    code="${body##*$'\n'}"
    cid="$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["headers"].get("x-client-id",""))' \
        <<<"${body%$'\n'*}" 2>/dev/null || true)"
    [[ "$code" == 200 && "$cid" == "$reader_id" ]] && got="200+id" || got="${code}/x-client-id=${cid:-none}"
    check "reader GET /date" "200+id" "$got"
    check "reader POST /echo" 403 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST -d x -H "Authorization: Bearer ${reader_token}" "${base}/echo")"
    check "writer POST /echo" 200 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST -d x -H "Authorization: Bearer ${writer_token}" "${base}/echo")"
    check "no token GET /date" 401 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "${base}/date")"
    check "garbage token GET /date" 401 "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ory_at_garbage.garbage" "${base}/date")"
    correct="${ok}/${n}"
    correct_detail="$(IFS=';'; echo "${detail[*]}")"
    correct_detail="${correct_detail//;/; }"
}

to_ms() { # wrk's "1.23ms" / "456.00us" / "1.02s" -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
clk_tck=$(getconf CLK_TCK)

rows=()   # markdown lines
details=()
baseline_rps=()

run_row() { # slug label kind(baseline|grpc|http|oathkeeper|opa) cache(true|false|-)
    local slug="$1" label="$2" kind="$3" cache="$4"
    log "row: ${label}"
    authz_pid=""
    local authz_port=0 authz_http_port=0
    case "$kind" in
    grpc | http) start_hydra_authz "$slug" "$cache"; authz_port=$([[ $kind == grpc ]] && echo "$authz_grpc" || echo "$authz_fa"); authz_http_port="$authz_http" ;;
    oathkeeper) start_oathkeeper "$slug" "$cache"; authz_port="$authz_api" ;;
    # deploy/envoy/envoy.yaml as for hydra-authz (gRPC); its metadata route's
    # cluster points at a port nobody listens on.
    opa) start_opa "$slug" "$cache"; authz_port="$authz_opa_grpc"; authz_http_port=$(free_port) ;;
    esac
    local listen
    listen=$(free_port) envoy_admin=$(free_port)
    local cfg_kind="$kind"
    [[ "$kind" == opa ]] && cfg_kind=grpc
    envoy_cfg "$cfg_kind" "${tmp}/${slug}.envoy.yaml" "$listen" "$envoy_admin" "$authz_port" "$authz_http_port"
    start_envoy "${tmp}/${slug}.envoy.yaml"

    correct="–" correct_detail=""
    if [[ "$kind" != baseline ]]; then
        correctness "$listen"
        details+=("- ${label}: ${correct_detail}")
    fi

    if ((check_only)); then
        stop "$envoy_pid"
        [[ -n "$authz_pid" ]] && stop "$authz_pid"
        rows+=("${label}|–|–|–|–|–|–|–|–|${correct}")
        return
    fi
    local url="http://127.0.0.1:${listen}/date"
    wrk -t "$threads" -c "$connections" -d 2s -H "Authorization: Bearer ${reader_token}" "$url" >/dev/null
    local i0 i1 c0=0 c1=0 out
    i0=$(introspections)
    [[ -n "$authz_pid" ]] && c0=$(cpu_ticks "$authz_pid")
    wrk -t "$threads" -c "$connections" -d "${duration}s" --latency \
        -H "Authorization: Bearer ${reader_token}" "$url" >"${tmp}/${slug}.wrk.txt"
    [[ -n "$authz_pid" ]] && c1=$(cpu_ticks "$authz_pid")
    i1=$(introspections)
    out="${tmp}/${slug}.wrk.txt"
    local rps reqs p50 p99 non2xx rss="–" cpu="–" ipr
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    non2xx="${non2xx:-0}"
    errs=$(awk '/Socket errors:/ { sub(/.*Socket errors: /, ""); print }' "$out")
    if [[ -n "$authz_pid" ]]; then
        rss=$(rss_mib "$authz_pid")
        cpu=$(awk -v d=$((c1 - c0)) -v t="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.1f", d / t * 1e6 / n }')
    fi
    ipr=$(awk -v d=$((i1 - i0)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')

    local paced
    paced=$(python3 "${tmp}/paced.py" 127.0.0.1 "$listen" /date "$reader_token" "$rate" "$rate_duration")
    local pp50 pp99 pn perr
    read -r pp50 pp99 pn perr <<<"$paced"
    [[ "$perr" == 0 ]] || pp99="${pp99} (${perr} non-200)"

    stop "$envoy_pid"
    [[ -n "$authz_pid" ]] && stop "$authz_pid"
    [[ "$kind" == baseline ]] && baseline_rps+=("$rps")
    rows+=("${label}|${rps}|${p50}|${p99}|${pp50} / ${pp99}|${cpu}|${rss}|${ipr}|${non2xx}${errs:+ (socket errors: ${errs})}|${correct}")
}

# ------------------------------------------------------------- the run
n=0
for slug in "${order[@]}"; do
    IFS='|' read -r label kind cache <<<"${row_label[$slug]}"
    # A repeated slug gets its own temp files.
    n=$((n + 1))
    run_row "${slug}-${n}" "$label" "$kind" "$cache"
done

base=0
((${#baseline_rps[@]})) && base=$(printf '%s\n' "${baseline_rps[@]}" | awk '{ s += $1; n++ } END { printf "%.0f", s / n }')

envoy_version="$("${ENVOY_BIN}" --version | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p')"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
cat <<EOF
## hydra-authz, Ory Oathkeeper and OPA-Envoy side by side ($(date -u +%Y-%m-%d))

Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), one run, loopback.
Versions: Envoy ${envoy_version:-?} (--concurrency 1), Ory Hydra $("${HYDRA_BIN}" version 2>/dev/null | awk '/^Version:/ { print $2 }'),
Ory Oathkeeper $("${OATHKEEPER_BIN}" version 2>/dev/null | awk '/^Version:/ { print $2 }'), OPA-Envoy v1.0.0-envoy (OPA $("${OPA_ENVOY_BIN}" version 2>/dev/null | awk '/^Version:/ { print $2 }')),
$("${BENCH_HYDRA_AUTHZ_BIN}" --version) (commit ${commit}).
Load: \`wrk -t ${threads} -c ${connections} -d ${duration}s --latency\` GET /date with the reader's token after 2 s of warm-up;
paced: ${rate} req/s for ${rate_duration} s (16 keep-alive connections, latency from the scheduled send time).
Ratio: req/s over the mean of the two baseline rows (${base} req/s).

| row | req/s | × baseline | p50 ms | p99 ms | p50 / p99 ms at ${rate} req/s | authorizer CPU µs/req | authorizer RSS MiB | introspections/req | non-2xx | correct |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
for r in "${rows[@]}"; do
    IFS='|' read -r label rps rest <<<"$r"
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { if (b > 0 && a != "–") printf "%.2f", a / b; else printf "–" }')
    echo "| ${label} | ${rps} | ${ratio} | ${rest//|/ | } |"
done
echo
echo "Seed cases through Envoy (want: reader GET /date 200 with x-client-id = reader at the upstream; reader POST /echo 403; writer POST /echo 200; no token 401; garbage token 401):"
echo
printf '%s\n' "${details[@]}"
log "done; temp files in ${tmp}"
