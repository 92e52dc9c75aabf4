#!/usr/bin/env bash
# `make run`: start one replica on embedded defaults and print how to look at it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8080}
PY=.venv/bin/python
export GATEWAY_DATA_DIR=${GATEWAY_DATA_DIR:-./var}
viewer_token=$($PY -m gateway token --role viewer --sub "${USER:-local}-viewer" --ttl 86400)
cat <<MSG

  AICraft gateway on http://127.0.0.1:$PORT  (data in $GATEWAY_DATA_DIR; Ctrl-C stops it)

  Live map:   http://127.0.0.1:$PORT/?token=$viewer_token
  Bot token:  $PY -m gateway token --role npc --sub miner_1
  Admin:      $PY -m gateway token --role admin --sub ops
  Bot socket: ws://127.0.0.1:$PORT/ws/npc   (Authorization: Bearer <bot token>)

MSG
exec $PY -m gateway serve --port "$PORT"
