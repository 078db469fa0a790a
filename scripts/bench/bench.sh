#!/usr/bin/env bash
# Benchmark: the load generator itself. nginx (Debian) answers a fixed KServe v2 inference
# response on loopback; `triton-deploy bench` and wrk each send the same JSON inference request
# with one client thread and 32 connections for 10 s (and oha too, when it is installed). Prints
# requests per second and peak RSS side by side, with the ratio ours/wrk (goal >= 1.0x), then
# the RSS of 100k and of 1M requests (goal: flat).
#
#   ./scripts/bench/bench.sh [SECONDS] [CONNECTIONS]      (default 10 32)
#
# Needs nginx, wrk and GNU time (installed from Debian's packages when missing). Runs a release
# build first (slow the first time: the AWS SDK crates).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
conns="${2:-32}"
runs="${TD_BENCH_RUNS:-5}"
port="${TD_BENCH_PORT:-5090}"

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet --bin triton-deploy
bin="$target/release/triton-deploy"

work="$(mktemp -d)"
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The request (two FP32[1,16] inputs, as add_sub takes) and the fixed answer.
python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
random.seed(1)
vec = lambda: [round(random.uniform(-1, 1), 6) for _ in range(16)]
meta = {"name": "add_sub", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": n, "datatype": "FP32", "shape": [-1, 16]} for n in ("INPUT0", "INPUT1")],
        "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, 16]} for n in ("OUTPUT0", "OUTPUT1")]}
answer = {"model_name": "add_sub", "model_version": "1",
          "outputs": [{"name": n, "datatype": "FP32", "shape": [1, 16], "data": vec()} for n in ("OUTPUT0", "OUTPUT1")]}
request = {"inputs": [{"name": n, "datatype": "FP32", "shape": [1, 16], "data": vec()} for n in ("INPUT0", "INPUT1")]}
open(f"{work}/meta.json", "w").write(json.dumps(meta))
open(f"{work}/answer.json", "w").write(json.dumps(answer))
open(f"{work}/input.json", "w").write(json.dumps({"data": [{"INPUT0": request["inputs"][0]["data"], "INPUT1": request["inputs"][1]["data"]}]}))
# wrk's script: the same request our tool builds from input.json.
open(f"{work}/post.lua", "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f"wrk.body = {json.dumps(json.dumps(request, separators=(',', ':')))}\n")
PY

mkdir -p "$work/tmp"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp;
  proxy_temp_path $work/tmp;
  fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp;
  scgi_temp_path $work/tmp;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
  default_type application/json;
  server {
    listen 127.0.0.1:$port;
    location = /v2/models/add_sub { return 200 '$(cat "$work/meta.json")'; }
    location = /v2/models/add_sub/infer { return 200 '$(cat "$work/answer.json")'; }
  }
}
EOF
"$nginx_bin" -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/models/add_sub" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Each tool prints "<requests/s> <peak RSS KiB> <CPU us per request>": the CPU time (user +
# system) it spent per answered request tells the generator's own cost even when the server,
# not the generator, sets the rate.
measured() { # requests: the rss/cpu line from GNU time, per request
  awk -v n="$1" '{printf "%d %.2f\n", $1, ($2 + $3) * 1e6 / n}' "$work/rss"
}
ours() { # [extra bench args...]
  /usr/bin/time -f '%M %U %S' -o "$work/rss" "$bin" bench --url "$url" --model add_sub \
    --input-data "$work/input.json" --concurrency "$conns" --threads 1 --warmup 0 \
    --no-server-stats --format json "$@" >"$work/ours.json"
  read -r rps n < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["steps"][0]; assert s["errors"]==0, s; print(s["throughput"], s["requests"])' "$work/ours.json")
  printf '%s ' "$rps"; measured "$n"
}
wrk_run() {
  /usr/bin/time -f '%M %U %S' -o "$work/rss" wrk -t1 -c"$conns" -d"${secs}s" -s "$work/post.lua" "$url/v2/models/add_sub/infer" >"$work/wrk.txt"
  grep -q 'Non-2xx' "$work/wrk.txt" && { cat "$work/wrk.txt" >&2; exit 1; }
  awk '/^Requests\/sec/ {printf "%s ", $2}' "$work/wrk.txt"
  measured "$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
}
oha_run() {
  /usr/bin/time -f '%M %U %S' -o "$work/rss" oha --no-tui --output-format json --worker-threads 1 -z "${secs}s" -c "$conns" -m POST \
    -H 'content-type: application/json' -D "$work/body.json" "$url/v2/models/add_sub/infer" >"$work/oha.json"
  read -r rps n < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print(s["requestsPerSec"], int(s["requestsPerSec"] * s["total"]))' "$work/oha.json")
  printf '%s ' "$rps"; measured "$n"
}
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"][0]; print(json.dumps({"inputs":[{"name":k,"datatype":"FP32","shape":[1,16],"data":v} for k,v in d.items()]},separators=(",",":")), end="")' "$work/input.json" >"$work/body.json"
has_oha=false; command -v oha >/dev/null && has_oha=true

# Alternate the tools, so that drift in the machine's state hits both alike.
: >"$work/ours.txt"; : >"$work/general.txt"; : >"$work/wrk.txt.all"; : >"$work/oha.txt"
for r in $(seq $runs); do
  echo "run $r/$runs..." >&2
  ours --duration "${secs}s" --max-trials 1 >>"$work/ours.txt"; echo >>"$work/ours.txt"
  ours --duration "${secs}s" --max-trials 1 --http-client general >>"$work/general.txt"; echo >>"$work/general.txt"
  wrk_run >>"$work/wrk.txt.all"; echo >>"$work/wrk.txt.all"
  printf '  ours %s/s, general %s/s, wrk %s/s\n' "$(awk NF "$work/ours.txt" | tail -1 | awk '{printf "%.0f", $1}')" \
    "$(awk NF "$work/general.txt" | tail -1 | awk '{printf "%.0f", $1}')" "$(awk NF "$work/wrk.txt.all" | tail -1 | awk '{printf "%.0f", $1}')" >&2
  if $has_oha; then oha_run >>"$work/oha.txt"; echo >>"$work/oha.txt"; fi
done
o_rps=$(awk 'NF{print $1}' "$work/ours.txt" | median); o_rss=$(awk 'NF{print $2}' "$work/ours.txt" | median)
w_rps=$(awk 'NF{print $1}' "$work/wrk.txt.all" | median); w_rss=$(awk 'NF{print $2}' "$work/wrk.txt.all" | median)

echo
echo "load generator: JSON infer (2 x FP32[16]) against nginx on loopback, 1 client thread, $conns connections, ${secs} s, median of $runs"
cpu() { awk 'NF{print $3}' "$1" | median; }
printf '  %-16s %12s %12s %14s\n' tool 'requests/s' 'peak RSS' 'CPU us/request'
printf '  %-16s %12.0f %9d KiB %14s\n' triton-deploy "$o_rps" "$o_rss" "$(cpu "$work/ours.txt")"
g_rps=$(awk 'NF{print $1}' "$work/general.txt" | median); g_rss=$(awk 'NF{print $2}' "$work/general.txt" | median)
printf '  %-16s %12.0f %9d KiB %14s   (--http-client general: reqwest)\n' triton-deploy "$g_rps" "$g_rss" "$(cpu "$work/general.txt")"
printf '  %-16s %12.0f %9d KiB %14s\n' wrk "$w_rps" "$w_rss" "$(cpu "$work/wrk.txt.all")"
if $has_oha; then
  h_rps=$(awk 'NF{print $1}' "$work/oha.txt" | median); h_rss=$(awk 'NF{print $2}' "$work/oha.txt" | median)
  printf '  %-16s %12.0f %9d KiB %14s\n' oha "$h_rps" "$h_rss" "$(cpu "$work/oha.txt")"
fi
# The ratio of each back-to-back pair, then the median: drift in the machine between runs (large on
# a shared VM) cancels out within a pair.
ratio=$(paste <(awk NF "$work/ours.txt" | awk '{print $1}') <(awk NF "$work/wrk.txt.all" | awk '{print $1}') \
  | awk '{printf "%.4f\n", $1/$2}' | median | awk '{printf "%.2f", $1}')
pairs=$(paste <(awk NF "$work/ours.txt" | awk '{print $1}') <(awk NF "$work/wrk.txt.all" | awk '{print $1}') \
  | awk '{printf "%s%.2f", (NR>1?" ":""), $1/$2}')
printf '  ratio triton-deploy/wrk: %sx, median of the runs'"'"' ratios (%s) (goal >= 1.0x: %s)\n' "$ratio" "$pairs" \
  "$(awk -v r="$ratio" 'BEGIN{print (r>=1.0)?"PASS":"FAIL"}')"
printf '  CPU per request triton-deploy/wrk: %sx (below 1: lighter than wrk)\n' \
  "$(awk -v o="$(cpu "$work/ours.txt")" -v w="$(cpu "$work/wrk.txt.all")" 'BEGIN{printf "%.2f", o/w}')"

# Memory against request count: the histograms are fixed-size, nothing is kept per request.
small=$(ours --requests 100000 | awk '{print $2}')
large=$(ours --requests 1000000 | awk '{print $2}')
growth=$(awk -v s="$small" -v l="$large" 'BEGIN{printf "%.2f", l/s}')
echo
printf '  peak RSS at 100k requests: %d KiB; at 1M: %d KiB; ratio %sx (goal: flat, <= 1.10x: %s)\n' \
  "$small" "$large" "$growth" "$(awk -v g="$growth" 'BEGIN{print (g<=1.10)?"PASS":"FAIL"}')"
