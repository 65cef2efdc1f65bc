#!/usr/bin/env bash
# Installs what Berth's end-to-end tests need; idempotent and fast when up to date.
#
#   tests/node/node_modules   npm ci from tests/node/package-lock.json
#   tests/python/.venv        python3 -m venv + pip install -r tests/python/requirements.txt
#   tests/conformance         the conformance suite 0.2.0-alpha.12 and Node 22 (setup-conformance.sh)
#   tests/node-modern, tests/python-modern
#                             SDK clients of the 2026-07-28 era (setup-modern-clients.sh)
#
# Each part is redone only when its stamp is missing or older than / different
# from its inputs. Needs node >= 20, npm and python3 >= 3.10 on PATH; reaches only
# the npm registry and PyPI.
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$TESTS_DIR/node"
PY_DIR="$TESTS_DIR/python"
VENV="$PY_DIR/.venv"

say() { echo "[tests/setup] $*"; }
die() { echo "[tests/setup] ERROR: $*" >&2; exit 1; }
trap 'echo "[tests/setup] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# ---- node --------------------------------------------------------------------
command -v node >/dev/null || die "node not found on PATH (need node >= 20)"
command -v npm >/dev/null || die "npm not found on PATH"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old (need >= 20)"

node_stamp="$NODE_DIR/node_modules/.berth-setup-stamp"
if [ -f "$node_stamp" ] && [ ! "$NODE_DIR/package-lock.json" -nt "$node_stamp" ] \
    && [ ! "$NODE_DIR/package.json" -nt "$node_stamp" ]; then
  say "node: node_modules up to date (node $(node --version))"
else
  say "node: running npm ci in tests/node (node $(node --version), npm $(npm --version 2>/dev/null))"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund) || die "npm ci failed in $NODE_DIR"
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
    say "python: creating venv tests/python/.venv with python $py_version"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  say "python: pip install -r tests/python/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$PY_DIR/requirements.txt" \
    || die "pip install failed"
  "$VENV/bin/python" -c 'import mcp.client.streamable_http' || die "mcp SDK not importable after install"
  echo "$want" > "$py_stamp"
  say "python: installed"
fi

# ---- conformance 0.2 and the 2026-07-28 clients --------------------------------
"$TESTS_DIR/setup-conformance.sh"
"$TESTS_DIR/setup-modern-clients.sh"

say "ready: node tests/node/client.mjs URL MODE | tests/python/.venv/bin/python tests/python/client.py URL MODE"
