#!/usr/bin/env bash
# Runs every modern client mode against both reference servers: a self-check of the client
# scripts (and of the SDKs) that needs no Berth. Run tests/setup-modern-clients.sh first.
#
#   bash tests/node-modern/ref_matrix.sh [URL ...]
#
# Without URLs it starts tests/python-modern/ref_server.py and tests/node-modern/ref_server.mjs on
# free 127.0.0.1 ports and stops them afterwards. With URLs (e.g. Berth's
# http://127.0.0.1:PORT/mcp/<name> for a server that exposes the ref tools) it only runs the
# clients against those. For every URL x {python, node} client x {auto, pinned}, each MODE
# (era, call echo, call add, progress, cancel, listen) must exit 0 and report protocolVersion
# 2026-07-28. Ends with the line `N passed, N failed`; exits non-zero if anything failed.
set -uo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$TESTS_DIR/python-modern/.venv/bin/python"
[ -x "$PY" ] || { echo "ref_matrix: $PY missing: run tests/setup-modern-clients.sh" >&2; exit 2; }
[ -d "$TESTS_DIR/node-modern/node_modules" ] || { echo "ref_matrix: run tests/setup-modern-clients.sh" >&2; exit 2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # file
  for _ in $(seq 1 100); do grep -q '^READY ' "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "ref_matrix: server did not print READY: $(cat "$1")" >&2; return 1
}

urls=("$@")
if [ ${#urls[@]} -eq 0 ]; then
  tmp="$(mktemp -d)"
  p1="$(free_port)"; "$PY" "$TESTS_DIR/python-modern/ref_server.py" --port "$p1" >"$tmp/py.out" 2>"$tmp/py.err" & pids+=($!)
  p2="$(free_port)"; node "$TESTS_DIR/node-modern/ref_server.mjs" --port "$p2" >"$tmp/node.out" 2>"$tmp/node.err" & pids+=($!)
  wait_ready "$tmp/py.out" || exit 1
  wait_ready "$tmp/node.out" || exit 1
  urls=("http://127.0.0.1:$p1/mcp" "http://127.0.0.1:$p2/mcp")
fi

cases=(
  'era|{}'
  'call|{"tool":"echo","args":{"message":"hello"},"expect":"hello"}'
  'call|{"tool":"add","args":{"a":2,"b":3},"expect":"5"}'
  'progress|{"tool":"slow","args":{"seconds":1},"min":5}'
  'cancel|{"tool":"slow","args":{"seconds":30},"stats_tool":"stats"}'
  'listen|{}'
)
passed=0; failed=0
for url in "${urls[@]}"; do
  for client in python node; do
    for neg in auto pinned; do
      for c in "${cases[@]}"; do
        mode="${c%%|*}"; json="${c#*|}"
        if [ "$client" = python ]; then
          cmd=("$PY" "$TESTS_DIR/python-modern/client.py")
        else
          cmd=(node "$TESTS_DIR/node-modern/client.mjs")
        fi
        out="$("${cmd[@]}" --negotiation "$neg" --expect-version 2026-07-28 --timeout 30 "$url" "$mode" "$json" 2>&1)"
        rc=$?
        if [ $rc -eq 0 ]; then
          passed=$((passed + 1)); echo "ok   $client $neg $mode $url: $out"
        else
          failed=$((failed + 1)); echo "FAIL $client $neg $mode $url (exit $rc): $out"
        fi
      done
    done
  done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
