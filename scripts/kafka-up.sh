#!/usr/bin/env bash
# Starts a Kafka-protocol broker on loopback for riskflow and creates its topics.
#
# The broker is tansu (crates.io), installed once with cargo under $RISKFLOW_CACHE/tansu and
# kept between runs. It stores topics in SQLite under $RISKFLOW_CACHE/kafka (tansu's memory
# storage under-reports high watermarks, see docs/kafka.md); the database is new at each start
# unless RISKFLOW_KAFKA_KEEP=1. Running the script again while the broker is up only makes
# sure the topics exist. Stop it with scripts/kafka-down.sh. See docs/kafka.md.
#
#   RISKFLOW_KAFKA_PORT        listener port on 127.0.0.1 (default 9092)
#   RISKFLOW_KAFKA_PARTITIONS  partitions per topic (default 4)
set -euo pipefail
RISKFLOW_CACHE="${RISKFLOW_CACHE:-$HOME/.cache/riskflow}"
TANSU_VERSION=0.6.0
root="$RISKFLOW_CACHE/tansu"
tansu="$root/bin/tansu"
port="${RISKFLOW_KAFKA_PORT:-9092}"
partitions="${RISKFLOW_KAFKA_PARTITIONS:-4}"
state="$RISKFLOW_CACHE/kafka"
pidfile="$state/tansu-$port.pid"
log="$state/tansu-$port.log"
broker="tcp://127.0.0.1:$port"
mkdir -p "$state"

say() { echo "kafka-up: $*" >&2; }

if [ ! -x "$tansu" ]; then
  say "installing tansu $TANSU_VERSION into $root (once; about 20 minutes on 2 cores)"
  # Serialised, so that two scripts started together build it once.
  exec 9>"$RISKFLOW_CACHE/tansu.install.lock"
  flock 9
  if [ ! -x "$tansu" ]; then
    cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --root "$root" --locked --quiet
  fi
  flock -u 9
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if running && listening; then
  say "tansu already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"
else
  if listening; then
    say "port $port is taken by another process; set RISKFLOW_KAFKA_PORT"
    exit 1
  fi
  db="tansu-$port.db"
  if [ "${RISKFLOW_KAFKA_KEEP:-0}" != 1 ]; then
    rm -f "$state/$db" "$state/$db"-*
  fi
  say "starting tansu on 127.0.0.1:$port (storage $state/$db, log $log)"
  # Listens on loopback only and advertises the same address to clients. tansu resolves the
  # SQLite path relative to its working directory.
  (cd "$state" && exec nohup "$tansu" broker \
    --listener-url "$broker" \
    --advertised-listener-url "$broker" \
    --storage-engine "sqlite://$db" >"$log" 2>&1) &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    listening && break
    running || { say "tansu exited; its log:"; tail -20 "$log" >&2; exit 1; }
    sleep 0.1
  done
  listening || { say "tansu did not listen within 10 s"; exit 1; }
fi

# Topics of DESIGN.md §2 (inputs) and §4 (outputs), created with tansu's own CLI.
topics=(instruments accounts limits market-data position-deltas
        risk-breaches risk-actions risk-regimes risk-dead-letter)
existing=""
for _ in $(seq 1 50); do
  if existing="$("$tansu" topic list --broker "$broker" 2>/dev/null)"; then break; fi
  sleep 0.2
done
for t in "${topics[@]}"; do
  if grep -q "\"name\":\"$t\"" <<<"$existing"; then
    continue
  fi
  "$tansu" topic create "$t" --partitions "$partitions" --broker "$broker" >/dev/null
done
say "ready: $broker, topics ${topics[*]} ($partitions partitions each)"
