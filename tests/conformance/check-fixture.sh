#!/usr/bin/env bash
# Checks the `everything` fixture against the conformance suite with no
# gateway in between: serves it over rmcp's own Streamable HTTP server
# (`berth-fixture everything --http 127.0.0.1:0`) and runs run.sh at
# 2026-07-28 and at 2025-11-25.
#
#   tests/conformance/check-fixture.sh [FIXTURE_BINARY] [OUT_DIR]
#
# FIXTURE_BINARY defaults to target/debug/berth-fixture (cargo build -p
# berth-fixtures first); OUT_DIR to a fresh temporary directory. Needs
# tests/setup-conformance.sh to have run. Exits non-zero unless both
# revisions pass every check.
set -euo pipefail

CONF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CONF_DIR/../.." && pwd)"
fixture="${1:-$ROOT/target/debug/berth-fixture}"
out="${2:-$(mktemp -d)}"
[ -x "$fixture" ] || { echo "check-fixture.sh: no fixture binary at $fixture" >&2; exit 2; }
mkdir -p "$out"

"$fixture" everything --http 127.0.0.1:0 >"$out/fixture.stdout" 2>"$out/fixture.stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

# The fixture prints its URL once it listens.
url=""
for _ in $(seq 100); do
  url="$(head -n1 "$out/fixture.stdout")"
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "check-fixture.sh: fixture exited" >&2; cat "$out/fixture.stderr" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "check-fixture.sh: fixture printed no URL" >&2; exit 1; }
echo "fixture at $url; results in $out"

status=0
for spec in 2026-07-28 2025-11-25; do
  echo "== $spec"
  "$CONF_DIR/run.sh" "$url" "$spec" "$out/$spec" || status=1
done
exit "$status"
