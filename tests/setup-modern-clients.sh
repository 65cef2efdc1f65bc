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

say() { echo "[tests/setup-modern-clients] $*"; }
die() { echo "[tests/setup-modern-clients] ERROR: $*" >&2; exit 1; }
trap 'echo "[tests/setup-modern-clients] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# shellcheck source=setup-lib.sh
. "$TESTS_DIR/setup-lib.sh"

need_node
npm_install "$NODE_DIR" "import('@modelcontextprotocol/client').then(m => { if (!m.Client) process.exit(1) })"
python_venv "$PY_DIR" 'import mcp.client.subscriptions, mcp.client.streamable_http'

say "ready: node tests/node-modern/client.mjs [--negotiation auto|pinned] URL MODE [JSON]" \
  "| tests/python-modern/.venv/bin/python tests/python-modern/client.py [--negotiation auto|pinned] URL MODE [JSON]"
