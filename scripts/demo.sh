#!/usr/bin/env bash
# The live map with 50 simulated bots: starts a gateway on the embedded defaults (SQLite and the
# secret in ./var), waits for /api/health, starts the simulator, prints the viewer URL with a
# fresh viewer token, and stops both on Ctrl-C.
#
#   scripts/demo.sh                 # or: make demo
#   PORT=9090 NPCS=500 scripts/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8080}"
NPCS="${NPCS:-50}"
export GATEWAY_DATA_DIR="${GATEWAY_DATA_DIR:-./var}"

[ -x "$PY" ] || { echo "no $PY: run 'make test' (or create the venv) first" >&2; exit 1; }

gateway_pid=""
sim_pid=""
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping…"
  # The simulator first, so its bots leave cleanly; then the gateway drains and writes.
  [ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && wait "$sim_pid" 2>/dev/null || true
  [ -n "$gateway_pid" ] && kill -TERM "$gateway_pid" 2>/dev/null || true
  [ -n "$gateway_pid" ] && wait "$gateway_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$PY" -m gateway serve --host "$HOST" --port "$PORT" &
gateway_pid=$!

# Poll health with a deadline (the first start applies migrations).
deadline=$((SECONDS + 30))
until "$PY" - "$HOST" "$PORT" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/api/health", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
do
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "the gateway exited; is port $PORT free?" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "the gateway did not become healthy within 30 s" >&2
    exit 1
  fi
  sleep 0.2
done

# `python -m gateway simulate` once the CLI has the subcommand; the module works either way.
if "$PY" -m gateway simulate --help >/dev/null 2>&1; then
  simulate=("$PY" -m gateway simulate)
else
  simulate=("$PY" -m gateway.simulate)
fi
"${simulate[@]}" --url "ws://$HOST:$PORT" --npcs "$NPCS" &
sim_pid=$!

token="$("$PY" -m gateway token --role viewer --sub demo)"
echo
echo "  live map:  http://$HOST:$PORT/?token=$token"
echo "  ($NPCS simulated bots; Ctrl-C stops the simulator and the gateway)"
echo

wait "$sim_pid" "$gateway_pid"
