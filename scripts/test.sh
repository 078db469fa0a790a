#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test (unit, integration, and the
# differential conformance tests, which need NVIDIA's published schema from `tritonclient`).
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -E 'test(onnx)' # extra arguments go to cargo nextest
#
# Environment:
#   TD_VENV_DIR       the directory of the Python venvs (default: ./.stack)
#   TD_STACK_DIR      state of the local stand-ins (default: ./.stack); ports: see scripts/stack.sh
#   CARGO_TARGET_DIR  cargo's build directory (CI points it outside the clone)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

# venv NAME REQUIREMENTS: the venv NAME under TD_VENV_DIR, (re)installed when its requirements
# changed; prints its path.
venv() {
  local dir="${TD_VENV_DIR:-$PWD/.stack}/$1" requirements="$2"
  if [ ! -x "$dir/bin/python" ] || ! cmp -s "$requirements" "$dir/.requirements"; then
    say "installing $requirements into $dir"
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$dir/.requirements"
  fi
  echo "$dir"
}
# Python tools for the tests: the conformance oracle (tritonclient's ModelConfig schema and
# Google's protobuf text-format parser), cfn-lint (AWS's CloudFormation linter) and onnx
# (regenerates model-repos/ models).
tools="$(venv venv-tools scripts/requirements-tools.txt)"
export TD_ORACLE_PYTHON="$tools/bin/python"
export TD_CFN_LINT="$tools/bin/cfn-lint"
# checkov, the IaC scanner the rendered templates are held to (its dependencies apart).
checkov="$(venv venv-checkov scripts/requirements-checkov.txt)"
export TD_CHECKOV="$checkov/bin/checkov"
# The AWS CLI, which the AMI's provisioning script logs in to ECR with (`ami build` runs that
# script here against the stand-ins).
awscli="$(venv venv-awscli scripts/requirements-awscli.txt)"
export TD_AWS_CLI="$awscli/bin/aws"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The local stand-ins (moto, registries, MLServer) for the integration tests and the demo; stopped again on exit unless
# they were already running.
stack_status="$(./scripts/stack.sh status)"
if grep -q "registry: running" <<<"$stack_status"; then
  say "using the running local stack"
else
  say "starting the local stack"
  trap './scripts/stack.sh down' EXIT
  ./scripts/stack.sh up
fi
eval "$(./scripts/stack.sh env)"

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --run-ignored all --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast -- --include-ignored "$@"
fi

# The local demo, on the same stand-ins, so that the two cannot drift apart (skipped when the
# tests were filtered).
if [ $# -eq 0 ]; then
  say "examples/local/demo.sh"
  TD_KEEP_STACK=1 ./examples/local/demo.sh
fi
