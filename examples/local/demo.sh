#!/usr/bin/env bash
# The whole pipeline on this machine, without AWS, in a few minutes (the first build takes longer):
#   validate -> push -> rollout --plan -> rollout -> status -> bench -> destroy
# against the local stand-ins of scripts/stack.sh: moto for the AWS APIs, Debian's docker-registry
# for ECR's registry, a second registry holding a stand-in tritonserver base image, and MLServer (a
# real KServe v2 server) answering where the load balancer would.
#
#   examples/local/demo.sh            run it (starts the stand-ins it needs, stops what it started)
#   TD_KEEP_STACK=1 examples/local/demo.sh   leave the stand-ins running afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
spec="examples/local/triton-deploy.toml"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building triton-deploy"
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug/triton-deploy"

started=0
status="$(./scripts/stack.sh status)"
if ! grep -q "moto: running" <<<"$status"; then
  say "starting the local stand-ins (scripts/stack.sh up)"
  ./scripts/stack.sh up
  started=1
fi
eval "$(./scripts/stack.sh env)"
stop() { if [ "$started" = 1 ] && [ -z "${TD_KEEP_STACK:-}" ]; then ./scripts/stack.sh down; fi; }
trap stop EXIT
work="${TD_STACK_DIR:-$root/.stack}/demo"
mkdir -p "$work"

say "validate model-repos/simple-onnx"
"$bin" validate model-repos/simple-onnx

say "a stand-in tritonserver base image (the real one is not reachable here)"
base="${TD_UPSTREAM_URL#http://}/nvidia/tritonserver:demo-py3"
if ! skopeo inspect --tls-verify=false "docker://$base" >/dev/null 2>&1; then
  rm -rf "$work/base" && mkdir -p "$work/base/rootfs/opt/tritonserver/bin" "$work/base/rootfs/etc"
  printf '#!/bin/sh\necho tritonserver "$@"\n' >"$work/base/rootfs/opt/tritonserver/bin/tritonserver"
  echo "ID=triton-demo" >"$work/base/rootfs/etc/os-release"
  umoci init --layout "$work/base/layout"
  umoci new --image "$work/base/layout:1"
  umoci insert --rootless --image "$work/base/layout:1" "$work/base/rootfs" / >/dev/null
  umoci config --image "$work/base/layout:1" --os linux --architecture amd64 \
    --config.env TRITON_SERVER_VERSION=2.99.0 --config.entrypoint /opt/nvidia/nvidia_entrypoint.sh
  skopeo copy --quiet --dest-tls-verify=false "oci:$work/base/layout:1" "docker://$base"
fi
echo "$base"

say "push: model layer on the base, into ECR (moto) and its registry (docker-registry)"
"$bin" push model-repos/simple-onnx --repository demo/add-sub --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL"

say "rollout --plan (exit 2: everything would be created)"
set +e
"$bin" rollout --plan -f "$spec"
code=$?
set -e
[ "$code" = 2 ] || { echo "expected exit 2 from the plan, got $code" >&2; exit 1; }

say "rollout: the cluster stack, then the service; verified through MLServer at $TD_KSERVE_URL"
echo "(MLServer stands in for Triton behind the load balancer: the emulator runs no containers)"
"$bin" rollout --yes -f "$spec" --endpoint "$TD_KSERVE_URL" --smoke --poll 1

say "rollout --plan again (exit 0: nothing to change)"
"$bin" rollout --plan -f "$spec"

say "status"
"$bin" status -f "$spec"

say "bench: against MLServer at $TD_KSERVE_URL, standing in for the load balancer's endpoint"
"$bin" bench --url "$TD_KSERVE_URL" --model iris --concurrency 1:8:x2 --duration 1s --warmup 500ms \
  --latency-budget 50ms --stability 20 --max-trials 5 --price-per-hour 1.006 \
  --out "$work/bench.json" --csv "$work/bench.csv" --report "$work/bench.html"
echo "(on AWS, point autoscaling.bench_result at $work/bench.json: rollout sets its target from it)"

say "destroy"
"$bin" destroy --yes -f "$spec"

say "done"
cat <<EOS
  spec:            $spec
  images:          ECR repository demo/add-sub (kept; registry data in ${TD_STACK_DIR:-.stack}/registry)
  stand-in logs:   ${TD_STACK_DIR:-.stack}/*.log
  demo files:      $work (bench.json, bench.csv, bench.html: open it in a browser)
  next:            the same spec against AWS: unset AWS_ENDPOINT_URL, see README "On AWS"
EOS
