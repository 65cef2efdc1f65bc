#!/usr/bin/env bash
# Installs the MODERN-era (MCP 2026-07-28) official SDK clients for Berth's end-to-end tests;
# idempotent and fast when up to date. Called from tests/setup.sh; can also be run on its own.
#
#   tests/node-modern/node_modules   npm ci from tests/node-modern/package-lock.json
#                                    (@modelcontextprotocol/client 2.4.0, server 2.4.0, node 2.1.2)
#   tests/python-modern/.venv        python3 -m venv + pip install -r tests/python-modern/requirements.txt
#                                    (mcp 2.3.0)
#
# Each part is redone only when its stamp is missing or older than / different from its
# inputs. Needs node >= 20, npm and python3 >= 3.10 on PATH; reaches only the npm registry
# and PyPI.
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$TESTS_DIR/node-modern"
PY_DIR="$TESTS_DIR/python-modern"
VENV="$PY_DIR/.venv"

say() { echo "[tests/setup-modern-clients] $*"; }
die() { echo "[tests/setup-modern-clients] ERROR: $*" >&2; exit 1; }
trap 'echo "[tests/setup-modern-clients] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# ---- node --------------------------------------------------------------------
command -v node >/dev/null || die "node not found on PATH (need node >= 20)"
command -v npm >/dev/null || die "npm not found on PATH"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old (the @modelcontextprotocol v2 packages need >= 20)"

node_stamp="$NODE_DIR/node_modules/.berth-setup-stamp"
if [ -f "$node_stamp" ] && [ ! "$NODE_DIR/package-lock.json" -nt "$node_stamp" ] \
    && [ ! "$NODE_DIR/package.json" -nt "$node_stamp" ]; then
  say "node: node_modules up to date (node $(node --version))"
else
  say "node: running npm ci in tests/node-modern (node $(node --version), npm $(npm --version 2>/dev/null))"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund) || die "npm ci failed in $NODE_DIR"
  (cd "$NODE_DIR" && node -e "import('@modelcontextprotocol/client').then(m => { if (!m.Client) process.exit(1) })") \
    || die "@modelcontextprotocol/client not importable after npm ci"
  touch "$node_stamp"
  say "node: installed"
fi

# ---- python ------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found on PATH (need python >= 3.10)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$PYTHON" --version 2>&1) is too old (need >= 3.10)"

py_stamp="$VENV/.berth-setup-stamp"
py_version="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
venv_version="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
want="python $py_version, requirements $(sha256sum "$PY_DIR/requirements.txt" | cut -d' ' -f1)"
if [ "$venv_version" = "$py_version" ] && [ "$(cat "$py_stamp" 2>/dev/null || true)" = "$want" ]; then
  say "python: .venv up to date ($want)"
else
  if [ -d "$VENV" ] && [ "$venv_version" != "$py_version" ]; then
    say "python: removing stale .venv (its python is '${venv_version:-broken}', want $py_version)"
    rm -rf "$VENV"
  fi
  if [ ! -d "$VENV" ]; then
    say "python: creating venv tests/python-modern/.venv with python $py_version"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  say "python: pip install -r tests/python-modern/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$PY_DIR/requirements.txt" \
    || die "pip install failed"
  "$VENV/bin/python" -c 'import mcp.client.subscriptions, mcp.client.streamable_http' \
    || die "mcp 2.x SDK not importable after install"
  echo "$want" > "$py_stamp"
  say "python: installed"
fi

say "ready: node tests/node-modern/client.mjs [--negotiation auto|pinned] URL MODE [JSON]" \
  "| tests/python-modern/.venv/bin/python tests/python-modern/client.py [--negotiation auto|pinned] URL MODE [JSON]"
