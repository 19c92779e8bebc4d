#!/usr/bin/env bash
# The load benchmark in one command: builds release binaries and runs
# authz-bench, which prints a markdown table (every row against a baseline
# measured in the same run). Loopback only; each row runs for --duration-s.
#   scripts/bench.sh [--duration-s 10] [--concurrency 32] [--no-envoy] [--no-memory]
#   scripts/bench.sh --only b4,f,g   (just these row groups; a and b always run)
# Needs nginx for rows g (scripts/install-proxies.sh nginx prints its dir); skipped without it.
# Needs wrk for the Envoy rows (apt-get install wrk); they are skipped without it.
# scripts/bench.sh server-instructions   (the whole server process under valgrind's
#   callgrind, floor and hydra-authz at each log setting: instructions per check and
#   the ratio to the floor; repeatable where throughput is not; needs valgrind)
# Micro-benchmarks: cargo bench --bench decision
# AUTHZ_BENCH_SERVER_WORKERS=N runs the hydra-authz processes with N tokio workers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENVOY_BIN="${ENVOY_BIN:-$(scripts/install-envoy.sh)}"
export ENVOY_BIN
# hydra-authz (the server under test) and the bench tool (a workspace member).
cargo build --release --locked -p hydra-authz -p authz-bench --bins >&2
exec target/release/authz-bench "$@"
