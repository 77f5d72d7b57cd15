#!/usr/bin/env bash
# Kafka end to end (DESIGN.md §9): messages per second from the broker to the final snapshot.
# Generates a day dataset and publishes it with `riskflow produce` (not timed). Then, for two
# configurations (the day benchmark's: 30-minute snapshots and 5-minute bars; and the live
# path alone: one closing snapshot, one bar), times the same dataset replayed from files (one
# worker) and `riskflow run --kafka --until-caught-up` with 1 and 2 workers, each into a fresh
# output directory, with the broker's CPU time during each Kafka run. Last, an independent
# client (kafka-python) reads the five input topics from the start, with the broker's CPU
# time: what the broker serves without riskflow. Prints one line per run.
# Needs the broker: scripts/kafka-up.sh.
#   DELTAS=1000000 scripts/bench-kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
DELTAS="${DELTAS:-1000000}"
BROKERS="${BROKERS:-127.0.0.1:9092}"
work="${TMPDIR:-/tmp}/riskflow-bench-kafka"
bin=./target/release/riskflow
pidfile="$RISKFLOW_CACHE/kafka/tansu-${BROKERS##*:}.pid"
[ -f "$pidfile" ] || { echo "bench-kafka: no broker started by scripts/kafka-up.sh on $BROKERS" >&2; exit 1; }
broker_pid="$(cat "$pidfile")"
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet --bin riskflow
$bin gen --preset day --deltas "$DELTAS" --out "$work/day" >/dev/null
suffix="bench-$(date +%s)"
topics=(instruments accounts limits market-data position-deltas risk-breaches risk-actions risk-regimes risk-dead-letter)
keys=(instruments accounts limits market_data position_deltas breaches actions regimes dead_letter)
tansu="$RISKFLOW_CACHE/tansu/bin/tansu"
# config NAME SNAPSHOT_INTERVAL BAR: $work/NAME.toml (files) and $work/NAME-kafka.toml.
config() {
  {
    echo "[risk]"
    echo "snapshot_interval = \"$2\""
    # Five-minute bars: at 10k accounts with var/es/stress limits, a bar close revalues 7.4k
    # scopes (docs/performance-notes.md, "Analytics at scale").
    echo "[analytics]"
    echo "bar = \"$3\""
    echo 'correlation_factors = ["SPX", "SX5E", "NKY", "UKX"]'
  } >"$work/$1.toml"
  { cat "$work/$1.toml"; echo "[kafka.topics]"; for i in "${!topics[@]}"; do
    echo "${keys[$i]} = \"${topics[$i]}-$suffix\""; done; } >"$work/$1-kafka.toml"
}
config day 30m 5m
config live 24h 24h
for t in "${topics[@]}"; do
  "$tansu" topic create "$t-$suffix" --partitions "${PARTITIONS:-4}" --broker "tcp://$BROKERS" >/dev/null
done
$bin produce -q --dataset "$work/day" --brokers "$BROKERS" --config "$work/day-kafka.toml" >&2
# The broker's user + system CPU seconds so far.
broker_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$broker_pid/stat"; }
# report LABEL SUMMARY START END [BROKER_CPU_BEFORE BROKER_CPU_AFTER]
report() {
  python3 - "$@" <<'PY'
import json, sys
label, summary, start, end = sys.argv[1:5]
s = json.load(open(summary))
secs = float(end) - float(start)
r = s["records"]
n = r["ticks"] + r["deltas"] + r["instruments"] + r["accounts"] + r["limits"] + r["rejected"]
broker = f", broker CPU {float(sys.argv[6]) - float(sys.argv[5]):.2f} s" if len(sys.argv) > 6 else ""
print(f"{label}: {n} messages, to final snapshot in {secs:.2f} s = {n / secs:,.0f} msg/s "
      f"(engine's own figure {s['records_per_s']:,.0f}/s, {s['snapshots']} snapshots{broker})")
PY
}
for c in day live; do
  start=$(date +%s.%N)
  $bin run -q --replay "$work/day" --config "$work/$c.toml" --out "$work/out-$c-files" \
    --summary-json "$work/$c-files.json" >/dev/null
  report "$c, files -w 1" "$work/$c-files.json" "$start" "$(date +%s.%N)"
  for w in 1 2; do
    cpu0=$(broker_cpu)
    start=$(date +%s.%N)
    $bin run -q --kafka "$BROKERS" --until-caught-up -w "$w" --config "$work/$c-kafka.toml" \
      --out "$work/out-$c-w$w" --summary-json "$work/$c-w$w.json" >/dev/null
    end=$(date +%s.%N)
    report "$c, kafka -w $w" "$work/$c-w$w.json" "$start" "$end" "$cpu0" "$(broker_cpu)"
  done
done
cpu0=$(broker_cpu)
inputs=()
for t in "${topics[@]:0:5}"; do inputs+=("$t-$suffix"); done
"$RISKFLOW_PY" - "$BROKERS" "${inputs[@]}" <<'PY'
import sys, time
from kafka import KafkaConsumer, TopicPartition
brokers, topics = sys.argv[1], sys.argv[2:]
consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, group_id=None)
parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
want = sum(consumer.end_offsets(parts).values())
n, start = 0, time.time()
while n < want:
    for batch in consumer.poll(timeout_ms=1000, max_records=100000).values():
        n += len(batch)
secs = time.time() - start
print(f"kafka-python reads the input topics: {n} messages in {secs:.2f} s = {n / secs:,.0f} msg/s", end="")
PY
echo ", broker CPU $(awk -v a="$(broker_cpu)" -v b="$cpu0" 'BEGIN { printf "%.2f", a - b }') s"
