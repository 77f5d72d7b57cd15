#!/usr/bin/env bash
# Installs what riskflow's scripts need, once, under ~/.cache/riskflow (kept between runs):
# a Python venv with the independent readers of scripts/requirements.txt.
# Source it (`. scripts/setup.sh`) to get $RISKFLOW_CACHE and $RISKFLOW_PY.
set -euo pipefail
RISKFLOW_CACHE="${RISKFLOW_CACHE:-$HOME/.cache/riskflow}"
mkdir -p "$RISKFLOW_CACHE"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$RISKFLOW_CACHE/venv"
stamp="$venv/.requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  echo "setup: installing Python readers into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
RISKFLOW_PY="$venv/bin/python"
export RISKFLOW_CACHE RISKFLOW_PY
