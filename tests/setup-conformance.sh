#!/usr/bin/env bash
# Installs the official MCP conformance suite for Berth's tests; idempotent and
# fast when up to date.
#
#   tests/conformance/node_modules   npm ci from tests/conformance/package-lock.json:
#     @modelcontextprotocol/conformance 0.2.0-alpha.12 and the npm package
#     `node` 22.x, whose Node 22 binary (node_modules/.bin/node) runs the suite
#     (it needs Node >= 22; the system node may be older).
#
# Redone only when the stamp is missing, differs from the package files'
# digest, or the installed Node 22 / suite no longer runs. Needs node and npm
# on PATH (any version npm ci works with); reaches only the npm registry.
#
# Running the suite (TESTS=tests/conformance/node_modules/.bin):
#   $TESTS/node $TESTS/conformance server --url URL --suite all --spec-version 2026-07-28 -o DIR
#   $TESTS/node $TESTS/conformance server --url URL --suite all --spec-version 2025-11-25 -o DIR
# (40 and 33 scenarios; without `--suite all` the default "active" suite drops
# the draft-only and pending ones.) `--requirements 2026-07-28` (or 2025-11-25)
# runs what that revision scores instead (plus the tasks extension, unscored).
# `$TESTS/conformance list --server --spec-version V` names the scenarios;
# DIR/server-<scenario>-<time>/checks.json has every check.
#
# The fixture alone, without Berth, over rmcp's own Streamable HTTP server
# (prints its URL on the first stdout line):
#   cargo build -p berth-fixtures
#   target/debug/berth-fixture everything --http 127.0.0.1:0
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR="$TESTS_DIR/conformance"
BIN="$CONF_DIR/node_modules/.bin"

say() { echo "[tests/setup-conformance] $*"; }
die() { echo "[tests/setup-conformance] ERROR: $*" >&2; exit 1; }
trap 'echo "[tests/setup-conformance] ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

command -v node >/dev/null || die "node not found on PATH (npm ci runs the node package's install script with it)"
command -v npm >/dev/null || die "npm not found on PATH"

stamp="$CONF_DIR/node_modules/.berth-setup-stamp"
want="$(cat "$CONF_DIR/package.json" "$CONF_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"

# The suite and its Node both answer: what `npm ci` is meant to leave behind.
# Sets $installed to "conformance X, node vY".
installed=""
installed_ok() {
  local node_version suite_version
  node_version="$("$BIN/node" --version 2>/dev/null)" || return 1
  [ "${node_version#v}" != "$node_version" ] && [ "$(echo "${node_version#v}" | cut -d. -f1)" -ge 22 ] || return 1
  suite_version="$("$BIN/node" "$BIN/conformance" --version 2>/dev/null)" || return 1
  installed="conformance $suite_version, node $node_version"
}

if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] && installed_ok; then
  say "up to date ($installed)"
else
  say "running npm ci in tests/conformance (system node $(node --version), npm $(npm --version 2>/dev/null))"
  # The system node may be older than the suite's engines field: warnings only.
  (cd "$CONF_DIR" && npm ci --no-audit --no-fund) || die "npm ci failed in $CONF_DIR"
  installed_ok || die "after npm ci, $BIN/node (Node >= 22) or the conformance CLI does not run"
  echo "$want" > "$stamp"
  say "installed $installed"
fi

say "ready: $BIN/node $BIN/conformance server --url URL --suite all --spec-version 2026-07-28|2025-11-25"
