#!/usr/bin/env bash
# `make minecraft-demo`: a real (local) Minecraft world, the gateway and N mineflayer bots that
# wander on goto commands (an operator's command wins; wandering resumes after it), each with a
# role (ROLES, in turn) so the map shows them in colour; prints the live map's URL. Ctrl-C stops
# everything it started.
#
#   NPCS=10 PLANNER=gateway bash scripts/minecraft-demo.sh
#
# Settings (environment): NPCS (5), PORT (gateway, 8080), MC_PORT (Minecraft, 25565),
# PREFIX (miner_), ROLES (miner,builder,guard,farmer,scout), PLANNER (mineflayer | gateway: who
# plans the walks), WORLD (flat | generated),
# GATEWAY_DATA_DIR (./var), LOGS (var/minecraft-demo).
set -euo pipefail
cd "$(dirname "$0")/.."

NPCS=${NPCS:-5}
PORT=${PORT:-8080}
MC_PORT=${MC_PORT:-25565}
PREFIX=${PREFIX:-miner_}
PLANNER=${PLANNER:-mineflayer}
ROLES=${ROLES:-miner,builder,guard,farmer,scout}
WORLD=${WORLD:-flat}
PY=${PY:-.venv/bin/python}
export GATEWAY_DATA_DIR=${GATEWAY_DATA_DIR:-./var}
LOGS=${LOGS:-var/minecraft-demo}
MF=scripts/mineflayer

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "minecraft-demo needs $tool (Node.js 22+)" >&2; exit 1; }
done
[ -x "$PY" ] || { echo "no $PY: run 'make run' (or make the venv) first" >&2; exit 1; }
if [ ! -d "$MF/node_modules/mineflayer" ]; then
  echo "installing the Node packages in $MF (once)…"
  (cd "$MF" && npm ci --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$LOGS" "$GATEWAY_DATA_DIR"

pids=()
cleanup() {
  trap - INT TERM EXIT
  ((${#pids[@]})) || return 0
  echo
  echo "stopping…"
  # newest first: the bots leave the game, then the gateway drains, then the world stops
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# Wait (up to $2 s) until the command in $1 succeeds; $3 names what we wait for.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "$3 did not come up; see $LOGS/" >&2
      exit 1
    fi
    sleep 0.2
  done
}

node "$MF/server.js" --port "$MC_PORT" --world "$WORLD" --max-players "$((NPCS + 20))" \
  >"$LOGS/minecraft.log" 2>&1 &
pids+=($!)
wait_for "grep -q '\"event\":\"ready\"' '$LOGS/minecraft.log'" 60 "the Minecraft server"

"$PY" -m gateway serve --port "$PORT" >"$LOGS/gateway.log" 2>&1 &
pids+=($!)
wait_for "\"$PY\" -c 'import urllib.request,sys; sys.exit(urllib.request.urlopen(\"http://127.0.0.1:$PORT/api/health\").status != 200)'" 60 "the gateway"

admin_token=$("$PY" -m gateway token --role admin --sub minecraft-demo --ttl 3600)
node "$MF/bots.js" --server "127.0.0.1:$MC_PORT" --gateway "ws://127.0.0.1:$PORT" \
  --npcs "$NPCS" --prefix "$PREFIX" --planner "$PLANNER" --wander \
  --roles "$ROLES" --admin-token "$admin_token" \
  --token-cmd "$PY -m gateway token --role npc --sub {npc}" >"$LOGS/bots.log" 2>&1 &
pids+=($!)

viewer_token=$("$PY" -m gateway token --role viewer --sub demo-viewer --ttl 86400)
cat <<MSG

  Minecraft world (flying-squid 1.16.5, offline): 127.0.0.1:$MC_PORT  — join it with a 1.16.5 client
  Gateway: http://127.0.0.1:$PORT   ($NPCS bots ${PREFIX}1…${PREFIX}$NPCS wander; roles $ROLES; planner: $PLANNER)

  Live map:  http://127.0.0.1:$PORT/?token=$viewer_token

  Logs in $LOGS/. Ctrl-C stops everything.

MSG

# Until Ctrl-C, or until one of them exits.
wait -n "${pids[@]}" || true
echo "a process exited; see $LOGS/" >&2
