# Shared steps of the tests/setup*.sh scripts (sourced; the caller defines
# `say` and `die`). Each step is redone only when its stamp is missing or
# older than / different from its inputs.

# Checks that node (>= 20) and npm are on PATH.
need_node() {
  command -v node >/dev/null || die "node not found on PATH (need node >= 20)"
  command -v npm >/dev/null || die "npm not found on PATH"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 20 ] || die "node $(node --version) is too old (need >= 20)"
}

# npm_install DIR [CHECK]: `npm ci` in DIR when package.json or the lock file
# changed; CHECK (a node one-liner run in DIR) must succeed afterwards.
npm_install() {
  local dir="$1" check="${2:-}" name
  name="${dir#"$(dirname "$(dirname "$dir")")/"}"
  local stamp="$dir/node_modules/.berth-setup-stamp"
  if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] \
      && [ ! "$dir/package.json" -nt "$stamp" ]; then
    say "node: $name up to date (node $(node --version))"
    return
  fi
  say "node: running npm ci in $name (node $(node --version), npm $(npm --version 2>/dev/null))"
  (cd "$dir" && npm ci --no-audit --no-fund) || die "npm ci failed in $dir"
  if [ -n "$check" ]; then
    (cd "$dir" && node -e "$check") || die "$name: packages not usable after npm ci ($check)"
  fi
  touch "$stamp"
  say "node: $name installed"
}

# python_venv DIR IMPORTS: DIR/.venv with DIR/requirements.txt installed (by
# the python of $PYTHON, default python3 >= 3.10); `python -c IMPORTS` must
# succeed afterwards.
python_venv() {
  local dir="$1" imports="$2" name
  name="${dir#"$(dirname "$(dirname "$dir")")/"}"
  local venv="$dir/.venv" python="${PYTHON:-python3}"
  command -v "$python" >/dev/null || die "$python not found on PATH (need python >= 3.10)"
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$python" --version 2>&1) is too old (need >= 3.10)"
  local stamp="$venv/.berth-setup-stamp" version venv_version want
  version="$("$python" -c 'import sys; print(sys.version.split()[0])')"
  venv_version="$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
  want="python $version, requirements $(sha256sum "$dir/requirements.txt" | cut -d' ' -f1)"
  if [ "$venv_version" = "$version" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
    say "python: $name/.venv up to date ($want)"
    return
  fi
  if [ -d "$venv" ] && [ "$venv_version" != "$version" ]; then
    say "python: removing stale $name/.venv (its python is '${venv_version:-broken}', want $version)"
    rm -rf "$venv"
  fi
  if [ ! -d "$venv" ]; then
    say "python: creating venv $name/.venv with python $version"
    "$python" -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  say "python: pip install -r $name/requirements.txt"
  "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off -r "$dir/requirements.txt" \
    || die "pip install failed"
  "$venv/bin/python" -c "$imports" || die "$name: SDK not importable after install ($imports)"
  echo "$want" > "$stamp"
  say "python: $name installed"
}
