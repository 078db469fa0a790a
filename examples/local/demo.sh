#!/usr/bin/env bash
# The whole pipeline on this machine, without AWS, in a few minutes (the first build takes longer):
#   validate -> push -> run (the pushed image) -> rollout --plan -> rollout -> status -> bench
#   -> a second service on the same cluster -> status --cluster -> destroy both -> run --stop
# Real: the images, NVIDIA's tritonserver 2.51 in them (CPU, python backend; built here by
# scripts/tritonserver-image.sh), the container the Docker Engine runs, rollout's verification
# inference, the benchmark. Emulated: the AWS APIs (moto) and ECR's registry (Debian's
# docker-registry); the emulated ECS runs no tasks, so the local container stands in for them.
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

say "validate model-repos/python-backend"
"$bin" validate model-repos/python-backend

say "the tritonserver base image: NVIDIA's tritonserver 2.51 (CPU, python backend), built here"
echo "(from Debian packages and the nvidia-pytriton wheel by scripts/tritonserver-image.sh; NVIDIA's registry is not reachable here)"
base="$TD_TRITON_BASE"
echo "$base"

say "push: a model layer on the base, into ECR (moto) and its registry (docker-registry)"
image="$("$bin" push model-repos/python-backend --repository demo/text-stats --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL")"
echo "$image"

say "run: the pushed image, pulled from the registry with ECR's token, on this machine's Docker Engine"
echo "(no GPU here: Triton runs with explicit model control and models asking for a GPU load as KIND_CPU)"
cleanup() { "$bin" run --stop -f "$spec" >/dev/null 2>&1 || true; stop; }
trap cleanup EXIT
"$bin" run --image "$image" -f "$spec" --registry-endpoint "$TD_REGISTRY_URL" --detach \
  --http-port 0 --grpc-port 0 --metrics-port 0 --shm-size 256 --out examples/local/run.json
endpoint() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoints"][sys.argv[2]])' examples/local/run.json "$1"; }
triton="$(endpoint http)"
metrics="$(endpoint metrics)/metrics"
curl -s "$triton/v2/models/text_stats/infer" \
  -d '{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["served by the pushed image"]}]}'
echo

say "rollout --plan (exit 2: everything would be created; the grace period checked against run's time to ready)"
set +e
"$bin" rollout --plan -f "$spec"
code=$?
set -e
[ "$code" = 2 ] || { echo "expected exit 2 from the plan, got $code" >&2; exit 1; }

say "rollout: the cluster stack, the service's stack, then the service; verified (a real inference) against the container at $triton"
echo "(the emulated ECS runs no tasks: the container above stands in for the load balancer's targets)"
"$bin" rollout --yes -f "$spec" --endpoint "$triton" --smoke --poll 1

say "rollout --plan again (exit 0: nothing to change)"
"$bin" rollout --plan -f "$spec"

say "status"
"$bin" status -f "$spec"

say "bench: the real Triton in the container, binary tensors, with Triton's own statistics"
"$bin" bench --url "$triton" --model text_stats --tensor-format binary --concurrency 1:8:x2 \
  --duration 1s --warmup 500ms --latency-budget 50ms --stability 20 --max-trials 5 \
  --price-per-hour 1.006 --metrics-url "$metrics" \
  --out "$work/bench.json" --csv "$work/bench.csv" --report "$work/bench.html"
echo "(on AWS, point autoscaling.bench_result at $work/bench.json: rollout sets its target from it)"

second="examples/local/second-service.toml"
say "a second service on the same cluster: model-repos/simple-onnx, its own stack and listener rule"
"$bin" push model-repos/simple-onnx --repository demo/add-sub --base "$base" \
  --registry-endpoint "$TD_REGISTRY_URL"
set +e
"$bin" rollout --plan -f "$second"
code=$?
set -e
[ "$code" = 2 ] || { echo "expected exit 2 from the plan, got $code" >&2; exit 1; }
"$bin" rollout --yes -f "$second" --poll 1

say "status --cluster: the hosts, the GPUs, both services with their models"
"$bin" status --cluster -f "$spec"

say "destroy the second service: the first one and the cluster stay"
"$bin" destroy --yes -f "$second"
"$bin" status --cluster -f "$spec"

say "destroy the first service: the cluster's last, so its stack goes too"
"$bin" destroy --yes -f "$spec"

say "run --stop: the local container removed"
"$bin" run --stop -f "$spec"

say "done"
cat <<EOS
  spec:            $spec
  images:          ECR repository demo/text-stats (kept; registry data in ${TD_STACK_DIR:-.stack}/registry)
  stand-in logs:   ${TD_STACK_DIR:-.stack}/*.log
  demo files:      $work (bench.json, bench.csv, bench.html: open it in a browser)
  next:            the same spec against AWS: unset AWS_ENDPOINT_URL, see README "On AWS"
EOS
