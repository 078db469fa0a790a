#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (default 60 s), seeded with every config.pbtxt in
# the repository. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain.
#
#   ./scripts/fuzz.sh            # both targets, 60 s each
#   ./scripts/fuzz.sh 600        # 10 minutes each
#   ./scripts/fuzz.sh 60 parse_config
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_config validate_model)
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  find model-repos tests/fixtures -name '*.pbtxt' -exec cp {} "$corpus/" \; 2>/dev/null || true
  for f in model-repos/*/*/config.pbtxt; do cp "$f" "$corpus/$(echo "$f" | tr / _)"; done
  echo "==> fuzzing $t for ${seconds}s" >&2
  # -timeout: any single input taking over 5 s counts as a hang; -rss_limit_mb bounds memory.
  cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=65536
done
