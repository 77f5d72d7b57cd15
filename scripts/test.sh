#!/usr/bin/env bash
# Runs every test of riskflow on a fresh machine: formatting, clippy, the Rust unit, property
# and integration tests, the benches' compilation, and the end-to-end suite that runs the
# release binary against files and a real Kafka-protocol broker (started here, stopped on exit)
# and reads its output back with independent clients (DuckDB, pyarrow, kafka-python).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

step() { printf '\n== %s\n' "$*" >&2; }

step "format"
cargo fmt --all --check
step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "release build"
cargo build --release --quiet --bin riskflow
step "rust tests"
cargo test --workspace
step "benches compile and run (smoke size)"
cargo bench --quiet --bench throughput -- 200 100 20000 100
cargo bench --quiet --bench latency -- 2000 1 1 100000 20000
cargo bench --quiet --bench latency -- 2000 1 1 100000 20000 --bars
cargo bench --quiet --bench bar_close -- 50 20
cargo bench --quiet --bench stalls -- 1 2
smoke_out="$(mktemp -d)"
./target/release/riskflow run -q --out "$smoke_out" >/dev/null
cargo bench --quiet --bench snapshot_write -- 2 "$smoke_out"
rm -rf "$smoke_out"
step "broker (tansu on 127.0.0.1, scripts/kafka-up.sh)"
scripts/kafka-up.sh
trap scripts/kafka-down.sh EXIT
step "end-to-end tests (real binary and broker; DuckDB, pyarrow and kafka-python as independent clients)"
RISKFLOW_BIN="$PWD/target/release/riskflow" "$RISKFLOW_PY" -m pytest -q -p no:warnings tests/e2e
