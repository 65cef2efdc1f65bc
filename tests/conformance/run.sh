#!/usr/bin/env bash
# Runs the MCP conformance suite's server scenarios for one spec revision
# against URL, then judges every check it recorded.
#
#   tests/conformance/run.sh URL SPEC_VERSION OUT_DIR
#
# SPEC_VERSION is 2026-07-28 (40 scenarios) or 2025-11-25 (33 scenarios): the
# whole suite (`--suite all`) for that revision. Results go to
# OUT_DIR/server-<scenario>-<time>/checks.json; the suite's log to
# OUT_DIR/suite.log. Prints one line per scenario and a closing
# "N passed, N failed" line (scenarios), and exits non-zero unless every
# check is SUCCESS or INFO (a WARNING fails too: the fixture meets every
# SHOULD) and the scenario count is the expected one.
#
# Needs tests/setup-conformance.sh to have run.
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 URL SPEC_VERSION OUT_DIR" >&2; exit 2; }
url="$1" spec="$2" out="$3"

CONF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$CONF_DIR/node_modules/.bin"
[ -x "$BIN/node" ] && [ -e "$BIN/conformance" ] \
  || { echo "run.sh: suite not installed; run tests/setup-conformance.sh" >&2; exit 2; }

case "$spec" in
  2026-07-28) expected=40 ;;
  2025-11-25) expected=33 ;;
  *) echo "run.sh: unknown spec version $spec (2026-07-28 or 2025-11-25)" >&2; exit 2 ;;
esac

mkdir -p "$out"
# The suite's own exit status only says whether a check failed; the verdict
# below reads every check, warnings included.
"$BIN/node" "$BIN/conformance" server --url "$url" --suite all --spec-version "$spec" \
  -o "$out" >"$out/suite.log" 2>&1 || true

"$BIN/node" - "$out" "$expected" <<'EOF'
const fs = require('fs');
const path = require('path');
const [out, expected] = [process.argv[2], Number(process.argv[3])];
const scenarios = new Map();
for (const dir of fs.readdirSync(out).sort()) {
  const file = path.join(out, dir, 'checks.json');
  if (!dir.startsWith('server-') || !fs.existsSync(file)) continue;
  // server-<scenario>-<ISO time with dashes>
  const name = dir.slice('server-'.length).replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');
  scenarios.set(name, JSON.parse(fs.readFileSync(file, 'utf8')));
}
let passed = 0;
let failed = 0;
for (const [name, checks] of scenarios) {
  const bad = checks.filter((c) => !['SUCCESS', 'INFO'].includes(c.status));
  const ok = checks.length - bad.length;
  console.log(`${bad.length === 0 ? 'ok  ' : 'FAIL'} ${name}: ${ok}/${checks.length} checks`);
  for (const c of bad) console.log(`       ${c.status} ${c.id}: ${c.errorMessage ?? ''}`);
  if (bad.length === 0) passed++;
  else failed++;
}
if (scenarios.size !== expected) {
  console.log(`FAIL expected ${expected} scenarios, found ${scenarios.size} (see ${out}/suite.log)`);
  failed += Math.max(expected - scenarios.size, 1);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
EOF
