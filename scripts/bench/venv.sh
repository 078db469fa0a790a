# Sourced by the benchmarks: bench_venv prints the path of the benchmarks' Python venv
# (scripts/requirements-bench.txt under TD_VENV_DIR), (re)installed when its requirements changed.
bench_venv() {
  local venv="${TD_VENV_DIR:-$PWD/.stack}/venv-bench"
  if [ ! -x "$venv/bin/python" ] || ! cmp -s scripts/requirements-bench.txt "$venv/.requirements"; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-bench.txt >&2
    cp scripts/requirements-bench.txt "$venv/.requirements"
  fi
  echo "$venv"
}
