#!/usr/bin/env bash
# NVIDIA's tritonserver 2.51 (CPU, python backend) as a process on this machine, for the tests
# that need Triton's own verdict without Docker (validate next to Triton's loader): the
# nvidia-pytriton wheel unpacked in its own layout (the binary finds libtritonserver through a
# relative RPATH), the python backend's 3.11 stub next to the backend, and Debian's
# libpython3.11 and python3-numpy, which the stub embeds (it ignores PYTHONPATH and venvs).
#
#   scripts/tritonserver-process.sh        # prints the tritonserver binary's path
#
# Start it with PATH=/usr/bin:/bin (the stub finds its Python home through PATH) and
# --backend-directory=<dir of the binary>/../backends. Cached under ${TD_VENV_DIR:-./.stack}.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TD_VENV_DIR:-$root/.stack}"
wheel_version=0.7.0
dir="$cache/tritonserver-process"
say() { echo "tritonserver-process: $*" >&2; }

missing=()
dpkg -s libpython3.11 >/dev/null 2>&1 || missing+=(libpython3.11)
dpkg -s python3-numpy >/dev/null 2>&1 || missing+=(python3-numpy)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages)"
  sudo_="" && [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi

wheels="$cache/tritonserver-image"
mkdir -p "$wheels"
wheel="$(ls "$wheels"/nvidia_pytriton-"$wheel_version"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  say "downloading nvidia-pytriton $wheel_version (55 MB)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "nvidia-pytriton==$wheel_version" -d "$wheels" >&2
  wheel="$(ls "$wheels"/nvidia_pytriton-"$wheel_version"-*.whl | head -1)"
fi
key="$(cat "$0" "$wheel" | sha256sum | cut -c1-16)"
ts="$dir/pytriton/tritonserver"
if [ "$(cat "$dir/.inputs" 2>/dev/null || true)" != "$key" ]; then
  say "unpacking tritonserver 2.51 from $(basename "$wheel")"
  rm -rf "$dir"
  mkdir -p "$dir"
  /usr/bin/python3 -m zipfile -e "$wheel" "$dir" >&2
  chmod +x "$ts/bin/tritonserver" "$ts/python_backend_stubs/3.11/triton_python_backend_stub"
  cp "$ts/python_backend_stubs/3.11/triton_python_backend_stub" "$ts/backends/python/"
  echo "$key" >"$dir/.inputs"
fi
echo "$ts/bin/tritonserver"
