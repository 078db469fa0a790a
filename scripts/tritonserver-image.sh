#!/usr/bin/env bash
# A runnable tritonserver base image, built here without pulling anything: a Debian bookworm root
# filesystem (mmdebstrap: python3, python3-numpy, libpython3.11) plus NVIDIA's tritonserver 2.51
# from the nvidia-pytriton wheel (CPU, python backend), laid out like NVIDIA's image
# (/opt/tritonserver/bin/tritonserver, /opt/tritonserver/backends). Triton 2.51 is the server of
# NVIDIA's 24.10 release, hence the tag. NVIDIA's ONNX Runtime backend is a C++ library the wheel
# lacks: an "onnxruntime" python-based backend (tritonserver-image/onnxruntime_model.py on the
# onnxruntime wheel) takes its place, so ONNX models serve on CPU too.
#
#   scripts/tritonserver-image.sh [REGISTRY]   # e.g. 127.0.0.1:5002 (the upstream stand-in)
#
# Prints the image reference. The image is built once per set of inputs (this script and the
# wheel): the Docker Engine keeps it as local/tritonserver:24.10-py3 labelled with their hash, and
# it is copied to REGISTRY (when given) as nvidia/tritonserver:24.10-py3. Everything is cached
# under ${TD_VENV_DIR:-./.stack}/tritonserver-image.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TD_VENV_DIR:-$root/.stack}/tritonserver-image"
registry="${1:-}"
wheel_version=0.7.0
tag=24.10-py3
local_ref="local/tritonserver:$tag"
mkdir -p "$cache"
say() { echo "tritonserver-image: $*" >&2; }

wheel="$(ls "$cache"/nvidia_pytriton-"$wheel_version"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  say "downloading nvidia-pytriton $wheel_version (55 MB)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "nvidia-pytriton==$wheel_version" -d "$cache" >&2
  wheel="$(ls "$cache"/nvidia_pytriton-"$wheel_version"-*.whl | head -1)"
fi
# ONNX Runtime for the python-based backend (1.20: the last release built for Debian's numpy 1.24).
ort_dir="$cache/onnxruntime"
if [ ! -f "$ort_dir/.complete" ]; then
  say "downloading onnxruntime 1.20.1 and its pure-Python dependencies"
  rm -rf "$ort_dir" && mkdir -p "$ort_dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    onnxruntime==1.20.1 flatbuffers==25.12.19 packaging==26.4 protobuf==7.36.2 -d "$ort_dir" >&2
  touch "$ort_dir/.complete"
fi
backend_py="$root/scripts/tritonserver-image/onnxruntime_model.py"
key="$(cat "$0" "$wheel" "$backend_py" "$ort_dir"/*.whl | sha256sum | cut -c1-16)"

have="$(docker image inspect --format '{{ index .Config.Labels "ai.triton-deploy.inputs" }}' "$local_ref" 2>/dev/null || true)"
if [ "$have" != "$key" ]; then
  if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap (Debian package)"
    sudo_="" && [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq mmdebstrap >/dev/null
  fi
  rootfs="$cache/rootfs-$key.tar"
  if [ ! -s "$rootfs" ]; then
    say "building the Debian root filesystem (about a minute)"
    rm -f "$cache"/rootfs-*.tar
    mmdebstrap --quiet --variant=apt --format=tar \
      --include=python3,python3-numpy,python3-pip,libpython3.11,ca-certificates \
      bookworm "$rootfs.part" >&2
    mv "$rootfs.part" "$rootfs"
  fi
  say "importing it and installing tritonserver"
  docker import "$rootfs" "local/debian-py:bookworm-$key" >/dev/null
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' EXIT
  cp "$wheel" "$ctx/"
  mkdir -p "$ctx/ort"
  cp "$ort_dir"/*.whl "$ctx/ort/"
  cp "$backend_py" "$ctx/onnxruntime_model.py"
  cat >"$ctx/Dockerfile" <<EOF
FROM local/debian-py:bookworm-$key
COPY $(basename "$wheel") /tmp/
COPY ort /tmp/ort
COPY onnxruntime_model.py /tmp/
# The server and its libraries keep the wheel's layout (the binary finds libtritonserver through
# a relative RPATH); /opt/tritonserver points at it, as in NVIDIA's image. The python backend's
# stub for the system Python goes next to the backend.
RUN pip install --quiet --no-deps --break-system-packages /tmp/$(basename "$wheel") \\
 && rm /tmp/$(basename "$wheel") \\
 && TS=/usr/local/lib/python3.11/dist-packages/pytriton/tritonserver \\
 && cp \$TS/python_backend_stubs/3.11/triton_python_backend_stub \$TS/backends/python/ \\
 && ln -s \$TS /opt/tritonserver \\
 && pip install --quiet --no-deps --break-system-packages /tmp/ort/*.whl \\
 && mkdir -p \$TS/backends/onnxruntime \\
 && mv /tmp/onnxruntime_model.py \$TS/backends/onnxruntime/model.py \\
 && rm -rf /tmp/ort \\
 && mkdir -p /models
# The stub embeds Python and finds its home through PATH: the system Python's, first.
ENV PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    TRITON_SERVER_VERSION=2.51.0 \
    NVIDIA_TRITON_SERVER_VERSION=24.10
LABEL ai.triton-deploy.inputs=$key \
      org.opencontainers.image.description="tritonserver 2.51 (CPU, python backend, onnxruntime as a python-based backend) from the nvidia-pytriton wheel on Debian bookworm"
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models"]
EOF
  docker build --quiet -t "$local_ref" "$ctx" >/dev/null
  docker image rm "local/debian-py:bookworm-$key" >/dev/null 2>&1 || true
fi

if [ -n "$registry" ]; then
  ref="$registry/nvidia/tritonserver:$tag"
  remote="$(skopeo inspect --tls-verify=false --format '{{ index .Labels "ai.triton-deploy.inputs" }}' "docker://$ref" 2>/dev/null || true)"
  if [ "$remote" != "$key" ]; then
    say "copying it to $ref"
    skopeo copy --quiet --dest-tls-verify=false "docker-daemon:$local_ref" "docker://$ref" >&2
  fi
  echo "$ref"
else
  echo "$local_ref"
fi
