#!/usr/bin/env bash
# The local stand-ins for AWS, on loopback, for the tests and the demo:
#   moto      AWS APIs (ECR control plane, later ECS, CloudFormation...)     :${TD_MOTO_PORT:-5000}
#   registry  the ECR data plane: Debian's docker-registry with htpasswd
#             matching moto's ECR token (user AWS)                            :${TD_REGISTRY_PORT:-5001}
#   upstream  a second registry without auth, standing in for a public base
#             image registry (nvcr.io)                                        :${TD_UPSTREAM_PORT:-5002}
#   kserve    MLServer, a real KServe v2 server with a small sklearn model
#             (iris), standing in for Triton behind the load balancer        :${TD_KSERVE_PORT:-5003}
#             (gRPC on TD_KSERVE_GRPC_PORT, default 5004; metrics on 5005)
#   and, in the upstream registry and the Docker Engine, a real tritonserver base image
#   (scripts/tritonserver-image.sh: NVIDIA's tritonserver 2.51, CPU, python backend):
#   TD_TRITON_BASE
# and the same server as a process (scripts/tritonserver-process.sh): TD_TRITONSERVER
#
#   ./scripts/stack.sh up      install what is missing, start everything (refuses busy ports)
#   ./scripts/stack.sh down    stop what `up` started
#   ./scripts/stack.sh env     print the variables that point the tool at the stack
#   ./scripts/stack.sh status
#
# State lives in ${TD_STACK_DIR:-./.stack}; Python tools in ${TD_VENV_DIR:-./.stack/venv-*}.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
stack="${TD_STACK_DIR:-$root/.stack}"
venvs="${TD_VENV_DIR:-$stack}"
moto_port="${TD_MOTO_PORT:-5000}"
registry_port="${TD_REGISTRY_PORT:-5001}"
upstream_port="${TD_UPSTREAM_PORT:-5002}"
kserve_port="${TD_KSERVE_PORT:-5003}"
kserve_grpc_port="${TD_KSERVE_GRPC_PORT:-5004}"
kserve_metrics_port="${TD_KSERVE_METRICS_PORT:-5005}"
# moto's ECR token is deterministic: base64("AWS:<account>-auth-token").
ecr_password="123456789012-auth-token"

say() { printf '%s\n' "$*" >&2; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 300); do
    port_busy "$port" && return 0
    sleep 0.1
  done
  say "error: $name did not start listening on 127.0.0.1:$port (log: $stack/$name.log)"
  tail -20 "$stack/$name.log" >&2 || true
  return 1
}

install_debian() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v chromium >/dev/null || missing+=(chromium)   # bench's HTML report test
  command -v packer >/dev/null || missing+=(packer)       # render packer / ami build tests (1.6.6)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      sudo apt-get update -qq >/dev/null
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
  fi
}

install_venv() { # name requirements-file program
  local venv="$venvs/venv-$1" req="$root/scripts/$2"
  if [ ! -x "$venv/bin/$3" ] || ! cmp -s "$req" "$venv/.requirements"; then
    say "installing $2 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements"
  fi
}

mlserver_config() {
  local dir="$stack/mlserver"
  mkdir -p "$dir/models/iris"
  # parallel_workers 0: MLServer's worker processes die under recent uvloop versions.
  cat >"$dir/settings.json" <<EOS
{"debug": false, "host": "127.0.0.1", "http_port": $kserve_port, "grpc_port": $kserve_grpc_port,
 "metrics_port": $kserve_metrics_port, "metrics_endpoint": "/metrics", "parallel_workers": 0}
EOS
  cat >"$dir/models/iris/model-settings.json" <<'EOS'
{"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
 "parameters": {"uri": "./model.joblib", "version": "v1"},
 "inputs":  [{"name": "predict", "datatype": "FP32", "shape": [-1, 4]}],
 "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}]}
EOS
  if [ ! -f "$dir/models/iris/model.joblib" ]; then
    "$venvs/venv-ml/bin/python" - "$dir/models/iris/model.joblib" <<'EOP'
import sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[1])
EOP
  fi
}

start() { # name port command...
  local name=$1 port=$2
  shift 2
  if [ -f "$stack/$name.pid" ] && kill -0 "$(cat "$stack/$name.pid")" 2>/dev/null; then
    say "$name already running (pid $(cat "$stack/$name.pid"))"
    return 0
  fi
  if port_busy "$port"; then
    say "error: port $port is already in use; set TD_$(echo "$name" | tr a-z A-Z)_PORT to another port"
    return 1
  fi
  setsid "$@" >"$stack/$name.log" 2>&1 < /dev/null &
  echo $! >"$stack/$name.pid"
  wait_port "$port" "$name"
  say "$name listening on 127.0.0.1:$port (pid $(cat "$stack/$name.pid"))"
}

registry_config() { # name port auth(yes/no)
  local name=$1 port=$2 auth=$3 dir="$stack/$1"
  mkdir -p "$dir/data"
  {
    echo "version: 0.1"
    echo "log: { level: warn }"
    echo "storage:"
    echo "  filesystem: { rootdirectory: $dir/data }"
    echo "  delete: { enabled: true }"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    echo "  secret: local-test-secret"
    if [ "$auth" = yes ]; then
      echo "auth:"
      echo "  htpasswd: { realm: basic-realm, path: $dir/htpasswd }"
    fi
  } >"$dir/config.yml"
  if [ "$auth" = yes ]; then
    htpasswd -Bbn AWS "$ecr_password" >"$dir/htpasswd"
  fi
}

up() {
  mkdir -p "$stack"
  install_debian
  install_venv moto requirements-moto.txt moto_server
  start moto "$moto_port" env MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ECS_SERVICE_RUNNING="${MOTO_ECS_SERVICE_RUNNING:-1}" \
    "$venvs/venv-moto/bin/moto_server" -H 127.0.0.1 -p "$moto_port"
  registry_config registry "$registry_port" yes
  start registry "$registry_port" docker-registry serve "$stack/registry/config.yml"
  registry_config upstream "$upstream_port" no
  start upstream "$upstream_port" docker-registry serve "$stack/upstream/config.yml"
  # The real tritonserver base image (built once per input set; copied to the upstream registry).
  TD_VENV_DIR="$venvs" "$root/scripts/tritonserver-image.sh" "127.0.0.1:$upstream_port" >/dev/null
  # The same server as a process, for the tests that need Triton's verdict without Docker.
  TD_VENV_DIR="$venvs" "$root/scripts/tritonserver-process.sh" >/dev/null
  install_venv ml requirements-mlserver.txt mlserver
  mlserver_config
  start kserve "$kserve_port" "$venvs/venv-ml/bin/mlserver" start "$stack/mlserver"
  # Listening is not ready: wait for the model.
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$kserve_port/v2/models/iris/ready" >/dev/null && return 0
    sleep 0.2
  done
  say "error: MLServer did not load the iris model (log: $stack/kserve.log)"
  tail -20 "$stack/kserve.log" >&2
  return 1
}

stop_one() {
  local name=$1 pidf="$stack/$1.pid"
  [ -f "$pidf" ] || return 0
  local pid
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "stopped $name"
  fi
  rm -f "$pidf"
}

down() {
  for n in kserve upstream registry moto; do stop_one "$n"; done
}

env_vars() {
  cat <<EOV
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export TD_MOTO_URL=http://127.0.0.1:$moto_port
export TD_REGISTRY_URL=http://127.0.0.1:$registry_port
export TD_UPSTREAM_URL=http://127.0.0.1:$upstream_port
export TD_KSERVE_URL=http://127.0.0.1:$kserve_port
export TD_KSERVE_GRPC=127.0.0.1:$kserve_grpc_port
export TD_KSERVE_METRICS_URL=http://127.0.0.1:$kserve_metrics_port/metrics
export TD_TRITON_BASE=127.0.0.1:$upstream_port/nvidia/tritonserver:24.10-py3
export TD_TRITONSERVER=$venvs/tritonserver-process/pytriton/tritonserver/bin/tritonserver
EOV
}

status() {
  for n in moto registry upstream kserve; do
    if [ -f "$stack/$n.pid" ] && kill -0 "$(cat "$stack/$n.pid")" 2>/dev/null; then
      echo "$n: running (pid $(cat "$stack/$n.pid"))"
    else
      echo "$n: stopped"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_vars ;;
  status) status ;;
  *) say "usage: $0 up|down|env|status"; exit 2 ;;
esac
