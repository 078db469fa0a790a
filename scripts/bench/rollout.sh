#!/usr/bin/env bash
# Benchmark: a no-op `triton-deploy rollout` (stack and service already deployed) against the AWS stand-in:
# AWS API calls made, mutating calls among them, and wall time. Goals: <= 25 calls, 0 mutations, < 3 s.
# For scale, the same run's first (creating) rollout is reported too.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --quiet
bin="$target/release/triton-deploy"

started_stack=0
stack_status="$(./scripts/stack.sh status)"
if ! grep -q "moto: running" <<<"$stack_status"; then
  ./scripts/stack.sh up
  started_stack=1
fi
eval "$(./scripts/stack.sh env)"
work="$(mktemp -d)"
proxy_pid=""
cleanup() { [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null; rm -rf "$work"; [ "$started_stack" = 1 ] && ./scripts/stack.sh down; true; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 scripts/aws-proxy.py "$port" "$TD_MOTO_URL" --record "$work/calls" &
proxy_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"

name="bench$(date +%s)"
cat >"$work/spec.toml" <<EOS
[service]
name = "$name"
region = "us-east-1"
[image]
repository = "bench/$name"
EOS
# An image in the ECR stand-in for the service to run (put straight into moto, not through the proxy).
ecr() {
  curl -sf "$TD_MOTO_URL" -H "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.$1" \
    -H "Content-Type: application/x-amz-json-1.1" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=0" \
    -d "$2" >/dev/null
}
ecr CreateRepository "{\"repositoryName\": \"bench/$name\"}"
manifest='{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:'"$(printf 'c%.0s' $(seq 64))"'\",\"size\":2},\"layers\":[]}'
ecr PutImage "{\"repositoryName\": \"bench/$name\", \"imageTag\": \"v1\", \"imageManifest\": \"$manifest\"}"

now() { date +%s.%N; }
t0=$(now); "$bin" rollout -f "$work/spec.toml" --yes --timeout 5 --poll 1 >/dev/null 2>"$work/first.log" || { cat "$work/first.log" >&2; exit 1; }; t1=$(now)
first_calls=$(wc -l <"$work/calls")
: >"$work/calls"
t2=$(now); "$bin" rollout -f "$work/spec.toml" --yes >/dev/null; t3=$(now)
calls=$(wc -l <"$work/calls")
mutations=$(grep -cE '^(Create|Delete|Execute|Update|Put|Register|Deregister|Run|Start|Attach|Authorize|Modify|Tag|POST:|PUT:|DELETE:|PATCH:)' "$work/calls" || true)
wall=$(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.2f", b-a}')
first=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
echo "rollout benchmark (AWS stand-in, no-op rollout of a deployed stack and service):"
echo "  no-op rollout: $calls API calls (goal <= 25), $mutations mutating (goal 0), ${wall}s (goal < 3 s)"
echo "  calls: $(sort "$work/calls" | uniq -c | awk '{printf "%s x%s, ", $2, $1}' | sed 's/, $//')"
echo "  for scale, the creating rollout: $first_calls API calls, ${first}s"
