#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time (default 60 s each).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Targets: bearer (Authorization parsing), path_rules (normalization +
# matching), introspection (answer parsing), check_request (protobuf ->
# extraction), request_facts (methods, hosts, grpc-timeout, JWT headers,
# escaped log values). CI runs it with a few seconds and a fixed seed, so a run is
# reproducible; longer local runs use random seeds. Crashes land in
# fuzz/artifacts/<target>/ and fail the script.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 enables them on
# the stable toolchain this project uses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(bearer path_rules introspection check_request request_facts)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2 >&2
export RUSTC_BOOTSTRAP=1
seed_args=()
[[ -n "${FUZZ_SEED:-}" ]] && seed_args=(-seed="$FUZZ_SEED")
cargo fuzz build -O >&2
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${seconds}s" >&2
    cargo fuzz run -O "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 "${seed_args[@]}" 2>&1 | grep -E '^(Done|#[0-9]+ +DONE)|panicked|ERROR|SUMMARY' || true
    if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null; then
        echo "fuzz: $t found a crash: fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
