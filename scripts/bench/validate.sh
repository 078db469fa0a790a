#!/usr/bin/env bash
# Benchmark: `triton-deploy validate` over a generated 1,000-model repository (goal: < 1 s).
# For scale it also times Google's protobuf text-format parser (Python) reading the same 1,000
# configs with NVIDIA's schema: parsing only, none of the rules.
#
#   ./scripts/bench/validate.sh [MODELS]      (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000}"
runs=5
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet
bin="$target/release/triton-deploy"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
repo="$work/repo"
python3 - "$repo" "$n" <<'PY'
import os, shutil, sys
repo, n = sys.argv[1], int(sys.argv[2])
src = "model-repos"
onnx = os.path.join(src, "simple-onnx/add_sub/1/model.onnx")
cfg = open(os.path.join(src, "simple-onnx/add_sub/config.pbtxt")).read()
py_cfg = open(os.path.join(src, "python-backend/text_stats/config.pbtxt")).read()
py_model = open(os.path.join(src, "python-backend/text_stats/1/model.py")).read()
for i in range(n):
    if i % 10 == 9:  # an ensemble over the two models before it
        name = f"ensemble_{i:04d}"
        os.makedirs(f"{repo}/{name}/1")
        open(f"{repo}/{name}/1/.keep", "w").close()
        j = next(j for j in range(i - 1, -1, -1) if j % 4 != 3 and j % 10 != 9)
        a = f"onnx_{j:04d}"
        open(f"{repo}/{name}/config.pbtxt", "w").write(f'''name: "{name}"
platform: "ensemble"
max_batch_size: 8
input [ {{ name: "A" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "B" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "SUM" data_type: TYPE_FP32 dims: [ 16 ] }}, {{ name: "DIFF" data_type: TYPE_FP32 dims: [ 16 ] }} ]
ensemble_scheduling {{ step [ {{ model_name: "{a}" model_version: -1
  input_map {{ key: "INPUT0" value: "A" }} input_map {{ key: "INPUT1" value: "B" }}
  output_map {{ key: "OUTPUT0" value: "SUM" }} output_map {{ key: "OUTPUT1" value: "DIFF" }} }} ] }}
''')
    elif i % 4 == 3:
        name = f"python_{i:04d}"
        os.makedirs(f"{repo}/{name}/1")
        open(f"{repo}/{name}/config.pbtxt", "w").write(py_cfg.replace('"text_stats"', f'"{name}"'))
        open(f"{repo}/{name}/1/model.py", "w").write(py_model)
    else:
        name = f"onnx_{i:04d}"
        os.makedirs(f"{repo}/{name}/1")
        open(f"{repo}/{name}/config.pbtxt", "w").write(cfg.replace('"add_sub"', f'"{name}"'))
        shutil.copy(onnx, f"{repo}/{name}/1/model.onnx")
PY

# Warm the page cache, check that the generated repository is valid, then time.
"$bin" validate --no-color "$repo" > "$work/out.txt" || { echo "generated repository is invalid:" >&2; grep -E "^(error|warning)" "$work/out.txt" | head -20 >&2; exit 1; }
"$bin" validate --format json "$repo" > "$work/out.json"
models=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['models']))" "$work/out.json")

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ours=$(for _ in $(seq $runs); do
  s=$(date +%s%N); "$bin" validate --format json "$repo" > /dev/null; e=$(date +%s%N)
  echo $(( (e - s) / 1000 ))
done | median)

py="${TD_VENV_DIR:-$PWD/.stack}/venv-tools/bin/python"
peer=""
if [ -x "$py" ]; then
  peer=$("$py" - "$repo" "$runs" <<'PY'
import glob, importlib.util, os, sys, time, statistics
import tritonclient
from google.protobuf import text_format
spec = importlib.util.spec_from_file_location("mc", os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py"))
mc = importlib.util.module_from_spec(spec); spec.loader.exec_module(mc)
files = sorted(glob.glob(os.path.join(sys.argv[1], "*", "config.pbtxt")))
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    for f in files:
        text_format.Parse(open(f).read(), mc.ModelConfig())
    times.append(time.perf_counter() - t)
print(int(statistics.median(times) * 1e6))
PY
)
fi

printf 'validate: %d models, median of %d runs: %.3f s (goal < 1 s: %s)\n' "$models" "$runs" \
  "$(echo "$ours" | awk '{print $1/1e6}')" "$([ "$ours" -lt 1000000 ] && echo PASS || echo FAIL)"
if [ -n "$peer" ]; then
  printf 'protobuf text_format.Parse (Python, parse only, same configs): %.3f s; ratio peer/ours: %.2fx\n' \
    "$(echo "$peer" | awk '{print $1/1e6}')" "$(awk -v p="$peer" -v o="$ours" 'BEGIN{print p/o}')"
fi
