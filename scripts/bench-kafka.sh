#!/usr/bin/env bash
# Kafka end to end (DESIGN.md §9): messages per second from the broker to the final snapshot.
# Generates a day dataset, publishes it with `riskflow produce` (not timed), then times
# `riskflow run --kafka --until-caught-up` with 1 and 2 workers, each into a fresh output
# directory. Prints one line per run. Needs the broker: scripts/kafka-up.sh.
#   DELTAS=1000000 scripts/bench-kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DELTAS="${DELTAS:-1000000}"
BROKERS="${BROKERS:-127.0.0.1:9092}"
work="${TMPDIR:-/tmp}/riskflow-bench-kafka"
bin=./target/release/riskflow
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet --bin riskflow
$bin gen --preset day --deltas "$DELTAS" --out "$work/day" >/dev/null
suffix="bench-$(date +%s)"
topics=(instruments accounts limits market-data position-deltas risk-breaches risk-actions risk-regimes risk-dead-letter)
keys=(instruments accounts limits market_data position_deltas breaches actions regimes dead_letter)
tansu="${RISKFLOW_CACHE:-$HOME/.cache/riskflow}/tansu/bin/tansu"
{
  echo "[risk]"
  echo 'snapshot_interval = "30m"'
  # Five-minute bars: at 10k accounts with var/es/stress limits, a bar close revalues 7.4k
  # scopes (docs/performance-notes.md, "Analytics at scale").
  echo "[analytics]"
  echo 'bar = "5m"'
  echo 'correlation_factors = ["SPX", "SX5E", "NKY", "UKX"]'
  echo "[kafka.topics]"
  for i in "${!topics[@]}"; do
    "$tansu" topic create "${topics[$i]}-$suffix" --partitions "${PARTITIONS:-4}" --broker "tcp://$BROKERS" >/dev/null
    echo "${keys[$i]} = \"${topics[$i]}-$suffix\""
  done
} >"$work/kafka.toml"
$bin produce -q --dataset "$work/day" --brokers "$BROKERS" --config "$work/kafka.toml" >&2
for w in 1 2; do
  start=$(date +%s.%N)
  $bin run -q --kafka "$BROKERS" --until-caught-up -w "$w" --config "$work/kafka.toml" \
    --out "$work/out-w$w" --summary-json "$work/w$w.json" >/dev/null
  end=$(date +%s.%N)
  python3 - "$work/w$w.json" "$start" "$end" "$w" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
n = s["records"]["ticks"] + s["records"]["deltas"] + s["records"]["instruments"] + s["records"]["accounts"] + s["records"]["limits"] + s["records"]["rejected"]
print(f"kafka -w {sys.argv[4]}: {n} messages, broker to final snapshot in {secs:.2f} s = {n / secs:,.0f} msg/s "
      f"(engine's own figure {s['records_per_s']:,.0f}/s, {s['snapshots']} snapshots)")
PY
done
