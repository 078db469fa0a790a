#!/usr/bin/env bash
# `triton-deploy bench` next to NVIDIA's perf_analyzer (tritonclient 2.41.1), against the same real
# Triton model (text_stats of model-repos/python-backend, in the tritonserver image that
# scripts/tritonserver-image.sh builds), at the same loads, alternating runs. For each: throughput,
# p50, p99 (as each tool reports them), the mean time a request spent inside Triton (its own
# statistics: the referee when the tools disagree), the requests Triton itself counted, and the
# client's CPU time per counted request; then the ratios against the goals (throughput within ±5%,
# p50 within ±10%, client CPU per request at most 0.5× perf_analyzer's).
#
#   scripts/bench/perf-analyzer.sh [ROUNDS]        # default 2
#   TD_BIN=path/to/triton-deploy scripts/bench/perf-analyzer.sh   # default: the release build
#   TD_PIN=1 scripts/bench/perf-analyzer.sh   # Triton on CPU 1, the client on CPU 0: the client's
#                                             # CPU cannot slow the server it measures
#
# Both tools run with their defaults but for the load and the window: perf_analyzer's
# --measurement-interval 2000 and bench's --duration 2s (both: windows until three agree).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
rounds="${1:-2}"
venvs="${TD_VENV_DIR:-$root/.stack}"
say() { echo "perf-analyzer.sh: $*" >&2; }

bin="${TD_BIN:-}"
if [ -z "$bin" ]; then
  say "building triton-deploy (release: what users get)"
  cargo build --release --locked --quiet
  bin="${CARGO_TARGET_DIR:-$root/target}/release/triton-deploy"
fi

# NVIDIA's perf_analyzer: the tritonclient 2.41.1 wheel ships the binary; it links libb64 (Debian)
# and libcudart.so.12 (the pytriton wheel has one).
pa_venv="$venvs/venv-perf-analyzer"
if [ ! -x "$pa_venv/bin/perf_analyzer" ]; then
  say "installing tritonclient 2.41.1 (perf_analyzer) into $pa_venv"
  python3 -m venv "$pa_venv"
  "$pa_venv/bin/pip" install --quiet --disable-pip-version-check "tritonclient[http]==2.41.1"
fi
if ! dpkg -s libb64-0d >/dev/null 2>&1; then
  sudo_="" && [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq libb64-0d >/dev/null
fi
image="$(TD_VENV_DIR="$venvs" ./scripts/tritonserver-image.sh)"
libs="$venvs/perf-analyzer-libs"
if [ ! -e "$libs/libcudart.so.12" ]; then
  mkdir -p "$libs"
  wheel="$(ls "$venvs"/tritonserver-image/nvidia_pytriton-*.whl | head -1)"
  python3 - "$wheel" "$libs" <<'EOP'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if os.path.basename(n).startswith("libcudart"))
    with z.open(name) as src, open(os.path.join(out, "libcudart.so.12"), "wb") as dst:
        dst.write(src.read())
EOP
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

pin_server=() pin_client=()
if [ -n "${TD_PIN:-}" ]; then pin_server=(--cpuset-cpus=1) pin_client=(taskset -c 0); fi
cid="$(docker run -d --rm "${pin_server[@]}" -p 127.0.0.1::8000 -p 127.0.0.1::8002 --shm-size 256m \
  -v "$root/model-repos/python-backend:/models:ro" "$image")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
port() { docker port "$cid" "$1/tcp" | head -1 | sed 's/.*://'; }
http="127.0.0.1:$(port 8000)"
metrics="http://127.0.0.1:$(port 8002)/metrics"
until curl -sf "http://$http/v2/health/ready" >/dev/null; do sleep 0.2; done
work="$(mktemp -d)"

# Triton's count of successful requests.
counted() {
  curl -sf "$metrics" | awk '/^nv_inference_request_success\{/ && /model="text_stats"/ {s += $NF} END {print s + 0}'
}
# Triton's statistics for the model: successful requests and their total time inside Triton (ns).
served() {
  curl -sf "http://$http/v2/models/text_stats/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)["model_stats"][0]["inference_stats"]["success"]
print(s["count"], s["ns"])'
}
# Runs a command; prints its user + system CPU seconds.
cpu() {
  python3 - "$@" <<'EOP'
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{r.ru_utime + r.ru_stime:.3f}")
sys.exit(p.returncode)
EOP
}

# "triton us": the mean time a request of the run spent inside Triton (its statistics): what the
# server gave each tool, the referee when their latencies differ.
printf '%-14s %-14s %12s %9s %9s %10s %10s %14s\n' load tool infer/s "p50 us" "p99 us" "triton us" requests "cpu us/req"
declare -A sum
run_one() { # tool load-kind value
  local tool=$1 kind=$2 v=$3 before after secs thr p50 p99 s0 s1
  before="$(counted)"
  s0="$(served)"
  if [ "$tool" = perf_analyzer ]; then
    local range=(--concurrency-range "$v:$v")
    [ "$kind" = rate ] && range=(--request-rate-range "$v:$v")
    # perf_analyzer exits 2 when its windows never agree ("Failed to obtain stable
    # measurement"): that run measured nothing, so it is run again (at most three times), the
    # requests Triton counted meanwhile left out.
    local try
    for try in 1 2 3; do
      before="$(counted)"
      s0="$(served)"
      if secs="$(cpu "${pin_client[@]}" "$pa_venv/bin/perf_analyzer" -m text_stats -u "$http" -i http \
        "${range[@]}" --measurement-interval 2000 --string-length 16 -f "$work/pa.csv")"; then
        break
      fi
      [ "$try" = 3 ] && { say "perf_analyzer found no stable measurement at $kind $v three times"; exit 1; }
      say "perf_analyzer found no stable measurement at $kind $v; running it again"
    done
    read -r thr p50 p99 < <(python3 - "$work/pa.csv" <<'EOP'
import csv, sys
row = next(csv.DictReader(open(sys.argv[1])))
print(row["Inferences/Second"], row["p50 latency"], row["p99 latency"])
EOP
)
  else
    local load=(--concurrency "$v")
    [ "$kind" = rate ] && load=(--rate "$v")
    secs="$(cpu "${pin_client[@]}" "$bin" bench --url "http://$http" --model text_stats "${load[@]}" --duration 2s \
      --out "$work/ours.json")"
    read -r thr p50 p99 < <(python3 - "$work/ours.json" <<'EOP'
import json, sys
s = json.load(open(sys.argv[1]))["steps"][0]
print(s["throughput"], s["latency_us"]["p50"], s["latency_us"]["p99"])
EOP
)
  fi
  after="$(counted)"
  s1="$(served)"
  local inside
  inside="$(python3 -c "a, b = '$s0'.split(), '$s1'.split(); print(round((int(b[1]) - int(a[1])) / max(int(b[0]) - int(a[0]), 1) / 1000))")"
  local n=$(( ${after%.*} - ${before%.*} ))
  local per
  per="$(python3 -c "print(f'{$secs / max($n, 1) * 1e6:.1f}')")"
  printf '%-14s %-14s %12.1f %9s %9s %10s %10s %14s\n' "$kind $v" "$tool" "$thr" "$p50" "$p99" "$inside" "$n" "$per"
  sum["$kind $v $tool thr"]="$(python3 -c "print(${sum["$kind $v $tool thr"]:-0} + $thr)")"
  sum["$kind $v $tool p50"]="$(python3 -c "print(${sum["$kind $v $tool p50"]:-0} + $p50)")"
  sum["$kind $v $tool cpu"]="$(python3 -c "print(${sum["$kind $v $tool cpu"]:-0} + $per)")"
}

loads=("concurrency 1" "concurrency 4" "concurrency 16" "rate 500")
for r in $(seq 1 "$rounds"); do
  for l in "${loads[@]}"; do
    # Alternate which tool goes first, so that drift favours neither.
    if [ $((r % 2)) = 1 ]; then order=(perf_analyzer bench); else order=(bench perf_analyzer); fi
    for t in "${order[@]}"; do run_one "$t" $l; done
  done
done

echo
echo "ratios, bench / perf_analyzer, over $rounds round(s) (goals: throughput 0.95-1.05, p50 0.90-1.10, cpu <= 0.5)"
for l in "${loads[@]}"; do
  python3 - "$l" "${sum["$l bench thr"]}" "${sum["$l perf_analyzer thr"]}" \
    "${sum["$l bench p50"]}" "${sum["$l perf_analyzer p50"]}" \
    "${sum["$l bench cpu"]}" "${sum["$l perf_analyzer cpu"]}" <<'EOP'
import sys
l, bt, pt, bp, pp, bc, pc = sys.argv[1], *map(float, sys.argv[2:])
t, p, c = bt / pt, bp / pp, bc / pc
ok = lambda b: "ok" if b else "MISSED"
print(f"  {l:<16} throughput {t:5.2f} {ok(0.95 <= t <= 1.05)}   p50 {p:5.2f} {ok(0.90 <= p <= 1.10)}   cpu/request {c:5.2f} {ok(c <= 0.5)}")
EOP
done
