#!/usr/bin/env bash
# Installs what Berth's end-to-end tests need; idempotent and fast when up to date.
#
#   tests/node/node_modules   npm ci from tests/node/package-lock.json
#   tests/python/.venv        python3 -m venv + pip install -r tests/python/requirements.txt
#   tests/conformance         the conformance suite 0.2.0-alpha.12 and Node 22 (setup-conformance.sh)
#   tests/node-modern, tests/python-modern
#                             SDK clients of the 2026-07-28 era (setup-modern-clients.sh)
#   chromium                  Debian's package, for the dashboard test (apt-get, as root)
#
# Each part is redone only when its stamp is missing or older than / different
# from its inputs. Needs node >= 20, npm and python3 >= 3.10 on PATH; reaches only
# the npm registry and PyPI.
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$TESTS_DIR/node"
PY_DIR="$TESTS_DIR/python"

say() { echo "[tests/setup] $*"; }
die() { echo "[tests/setup] ERROR: $*" >&2; exit 1; }
trap 'echo "[tests/setup] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# shellcheck source=setup-lib.sh
. "$TESTS_DIR/setup-lib.sh"

need_node
# The built-in postgres tests check the database's own view (pg_stat_activity)
# with psql; Debian packages it as postgresql-client.
if ! command -v psql >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing postgresql-client (psql) with apt-get"
    apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null \
      || die "apt-get could not install postgresql-client"
  else
    say "psql not found: the built-in postgres tests will say so (install postgresql-client)"
  fi
fi
# The dashboard test drives headless Chromium; Debian packages it as chromium.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
    && ! command -v google-chrome >/dev/null && [ -z "${BERTH_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing chromium (the dashboard test's headless browser) with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium >/dev/null \
      || die "apt-get could not install chromium"
  else
    say "chromium not found: the dashboard test will skip (install Debian's chromium)"
  fi
fi
npm_install "$NODE_DIR"
python_venv "$PY_DIR" 'import mcp.client.streamable_http, agents.mcp'

# ---- conformance 0.2 and the 2026-07-28 clients --------------------------------
"$TESTS_DIR/setup-conformance.sh"
"$TESTS_DIR/setup-modern-clients.sh"

say "ready: node tests/node/client.mjs URL MODE | tests/python/.venv/bin/python tests/python/client.py URL MODE"
