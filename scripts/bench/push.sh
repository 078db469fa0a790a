#!/usr/bin/env bash
# Benchmark: `triton-deploy push` of a generated repository (default 2 GiB, mostly incompressible
# weights) to the local registry, next to `skopeo copy` of the equivalent OCI layout in the same run.
#
# Prints: MB/s of our push and of skopeo's copy (both uploading the same blobs to a fresh repository),
# the ratio (goal >= 1.0x skopeo), our peak RSS (goal < 200 MB), the cold build-and-push time, and the
# unchanged re-push time (goal < 1 s).
#
#   ./scripts/bench/push.sh [SIZE_MIB] [COMPRESSION]     (defaults: 2048 zstd)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib="${1:-2048}"
compression="${2:-zstd}"
models=4
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet
bin="$target/release/triton-deploy"

started_stack=0
stack_status="$(./scripts/stack.sh status)"
if ! grep -q "registry: running" <<<"$stack_status"; then
  ./scripts/stack.sh up
  started_stack=1
fi
eval "$(./scripts/stack.sh env)"
work="$(mktemp -d)"
cleanup() { rm -rf "$work"; [ "$started_stack" = 1 ] && ./scripts/stack.sh down; true; }
trap cleanup EXIT
export TRITON_DEPLOY_CACHE_DIR="$work/cache"
reg_host="${TD_REGISTRY_URL#http://}"
creds="AWS:123456789012-auth-token"
run="r$(date +%s)"   # fresh repositories every run (tags are immutable)

# A small base image in the stand-in upstream registry.
mkdir -p "$work/rootfs/opt/tritonserver/bin"
printf '#!/bin/sh\n' >"$work/rootfs/opt/tritonserver/bin/tritonserver"
umoci init --layout "$work/base" >/dev/null
umoci new --image "$work/base:1" >/dev/null
umoci insert --rootless --image "$work/base:1" "$work/rootfs" / >/dev/null
umoci config --image "$work/base:1" --os linux --architecture amd64 >/dev/null
base="${TD_UPSTREAM_URL#http://}/bench/tritonserver:1"
skopeo copy -q --dest-tls-verify=false "oci:$work/base:1" "docker://$base"

echo "generating $size_mib MiB in $models models..." >&2
per=$((size_mib / models))
for i in $(seq 1 $models); do
  m="$work/repo/model_$i"
  mkdir -p "$m/1"
  head -c "$((per * 1024 * 1024))" /dev/urandom >"$m/1/weights.bin"
  printf 'class TritonPythonModel:\n    pass\n' >"$m/1/model.py"
  printf 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n' >"$m/config.pbtxt"
done

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}' "$1"; }

# 1. Cold: build the layers (compress) and push them.
t0=$(now)
/usr/bin/time -v "$bin" --format json push "$work/repo" --repository bench/cold-$run --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL" --compression "$compression" --tag v1 >"$work/cold.json" 2>"$work/cold.time" \
  || { cat "$work/cold.time" >&2; exit 1; }
t1=$(now)
cold_s=$(elapsed "$t0" "$t1")
cold_rss=$(rss_mb "$work/cold.time")

# 2. The same image as an OCI layout, for skopeo (not timed).
"$bin" --format json push "$work/repo" --base "$base" --compression "$compression" --tag v1 \
  --output "oci-layout:$work/layout" >/dev/null

# 3. Upload only: cached layers to a fresh repository (what skopeo does with a ready layout).
t0=$(now)
/usr/bin/time -v "$bin" --format json push "$work/repo" --repository bench/warm-$run --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL" --compression "$compression" --tag v1 >"$work/warm.json" 2>"$work/warm.time" \
  || { cat "$work/warm.time" >&2; exit 1; }
t1=$(now)
ours_s=$(elapsed "$t0" "$t1")
ours_rss=$(rss_mb "$work/warm.time")
bytes=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['uploaded_bytes'])" "$work/warm.json")

# 4. skopeo copy of the same image (the layout written in step 2) to a fresh repository.
t0=$(now)
/usr/bin/time -v skopeo copy -q --dest-tls-verify=false --dest-creds "$creds" \
  "oci:$work/layout:v1" "docker://$reg_host/bench/skopeo-$run:v1" 2>"$work/skopeo.time"
t1=$(now)
skopeo_s=$(elapsed "$t0" "$t1")
skopeo_rss=$(rss_mb "$work/skopeo.time")

# 5. Unchanged re-push.
t0=$(now)
"$bin" --format json push "$work/repo" --repository bench/warm-$run --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL" --compression "$compression" --tag v1 >"$work/again.json"
t1=$(now)
again_s=$(elapsed "$t0" "$t1")
again_bytes=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['uploaded_bytes'])" "$work/again.json")

mb=$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/1e6}')
ours_mbs=$(awk -v b="$bytes" -v s="$ours_s" 'BEGIN{printf "%.1f", b/1e6/s}')
skopeo_mbs=$(awk -v b="$bytes" -v s="$skopeo_s" 'BEGIN{printf "%.1f", b/1e6/s}')
ratio=$(awk -v a="$skopeo_s" -v b="$ours_s" 'BEGIN{printf "%.2f", a/b}')
echo "push benchmark: $size_mib MiB repository, $models models, --compression $compression, $mb MB of blobs"
echo "  triton-deploy push (layers cached): ${ours_s}s  ${ours_mbs} MB/s  peak RSS ${ours_rss} MB (goal < 200 MB)"
echo "  skopeo copy (same blobs):           ${skopeo_s}s  ${skopeo_mbs} MB/s  peak RSS ${skopeo_rss} MB"
echo "  ratio: ${ratio}x skopeo (goal >= 1.0x)"
echo "  cold build + push: ${cold_s}s, peak RSS ${cold_rss} MB"
echo "  unchanged re-push: ${again_s}s, ${again_bytes} bytes uploaded (goal < 1 s, 0 bytes)"
