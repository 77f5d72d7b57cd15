#!/usr/bin/env bash
# Stops the broker scripts/kafka-up.sh started (its pid file is under $RISKFLOW_CACHE/kafka).
set -euo pipefail
RISKFLOW_CACHE="${RISKFLOW_CACHE:-$HOME/.cache/riskflow}"
port="${RISKFLOW_KAFKA_PORT:-9092}"
pidfile="$RISKFLOW_CACHE/kafka/tansu-$port.pid"
if [ ! -f "$pidfile" ]; then
  echo "kafka-down: no broker started on port $port" >&2
  exit 0
fi
pid="$(cat "$pidfile")"
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
  fi
  echo "kafka-down: stopped tansu (pid $pid)" >&2
fi
rm -f "$pidfile"
