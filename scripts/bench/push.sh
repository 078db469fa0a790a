#!/usr/bin/env bash
# Benchmark: `triton-deploy push` with its defaults, of one model of real weights (default 2 GiB
# of fp16, tiled from scripts/bench/weights.py), to the local registry, next to `skopeo copy` in the
# same run of the same image packed ahead of time (an OCI layout, gzip as registries are usually
# fed, so skopeo only uploads).
#
# Prints: the cold push (layers built and uploaded, what a first push costs) and the upload-only
# push (layers cached) next to skopeo's copy, their ratios (goal >= 1.0x skopeo), our peak RSS
# (goal < 200 MB), and the unchanged re-push time (goal < 1 s).
#
#   ./scripts/bench/push.sh [SIZE_MIB] [WEIGHTS] [COMPRESSION]
#       defaults: 2048, fp16 (fp32, bf16, random), the tool's default compression
#   TD_PUSH_MODELS=4 splits the size across that many models.
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib="${1:-2048}"
kind="${2:-fp16}"
compression=()
[ -n "${3:-}" ] && compression=(--compression "$3")
models="${TD_PUSH_MODELS:-1}"
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

. scripts/bench/venv.sh
python="$(bench_venv)/bin/python"
echo "generating $size_mib MiB of $kind weights in $models model(s)..." >&2
per=$((size_mib / models))
for i in $(seq 1 $models); do
  m="$work/repo/model_$i"
  mkdir -p "$m/1"
  "$python" scripts/bench/weights.py write "$kind" "$per" "$m/1/weights.bin"
  # A file unique to this run: no blob can be reused from an earlier run (skopeo remembers where
  # it has seen a blob and would mount it from there).
  echo "$run" >"$m/1/run.txt"
  printf 'class TritonPythonModel:\n    pass\n' >"$m/1/model.py"
  printf 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]\n' >"$m/config.pbtxt"
done

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}' "$1"; }

# 1. Cold: build the layers (compress) and push them.
t0=$(now)
/usr/bin/time -v "$bin" --format json push "$work/repo" --repository bench/cold-$run --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL" "${compression[@]}" --tag v1 >"$work/cold.json" 2>"$work/cold.time" \
  || { cat "$work/cold.time" >&2; exit 1; }
t1=$(now)
cold_s=$(elapsed "$t0" "$t1")
cold_rss=$(rss_mb "$work/cold.time")

# 2. The same image packed ahead of time as an OCI layout, for skopeo (not timed): gzip, so that
#    skopeo uploads the blobs as they are (it gzips uncompressed layers on the way to a registry).
"$bin" --format json push "$work/repo" --base "$base" --compression gzip --tag v1 \
  --output "oci-layout:$work/layout" >/dev/null

# 3. Upload only: cached layers to a fresh repository (what skopeo does with a ready layout).
t0=$(now)
/usr/bin/time -v "$bin" --format json push "$work/repo" --repository bench/warm-$run --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL" "${compression[@]}" --tag v1 >"$work/warm.json" 2>"$work/warm.time" \
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
  --registry-endpoint "$TD_REGISTRY_URL" "${compression[@]}" --tag v1 >"$work/again.json"
t1=$(now)
again_s=$(elapsed "$t0" "$t1")
again_bytes=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['uploaded_bytes'])" "$work/again.json")

json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
encodings=$(json_field "$work/cold.json" "['layers']" | python3 -c "import ast,sys; print(','.join(sorted({l['compression'] for l in ast.literal_eval(sys.stdin.read())})))")
skopeo_bytes=$(du -cb "$work"/layout/blobs/sha256/* | tail -1 | cut -f1)
mbs() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b/1e6/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
what="default compression"
[ -n "${3:-}" ] && what="--compression $3"
echo "push benchmark: $size_mib MiB of $kind weights in $models model(s), $what (layers: $encodings)"
echo "  triton-deploy push, cold (build + upload):  ${cold_s}s  $(mbs $((size_mib * 1048576)) "$cold_s") MB/s of weights  peak RSS ${cold_rss} MB"
echo "  triton-deploy push, upload only (cached):   ${ours_s}s  $(mbs "$bytes" "$ours_s") MB/s  peak RSS ${ours_rss} MB"
echo "  skopeo copy of the image packed ahead:      ${skopeo_s}s  $(mbs "$skopeo_bytes" "$skopeo_s") MB/s  peak RSS ${skopeo_rss} MB"
echo "  ratio, cold push: $(ratio "$skopeo_s" "$cold_s")x skopeo (goal >= 1.0x); upload only: $(ratio "$skopeo_s" "$ours_s")x"
echo "  peak RSS: ${cold_rss} MB cold, ${ours_rss} MB upload only (goal < 200 MB)"
echo "  unchanged re-push: ${again_s}s, ${again_bytes} bytes uploaded (goal < 1 s, 0 bytes)"
