#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (default 60 s): parse_config and validate_model
# seeded with every config.pbtxt in the repository, http1_response (the load generator's HTTP/1.1
# client against a server answering with the fuzzer's bytes) with a well-formed answer of each
# framing. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain.
#
#   ./scripts/fuzz.sh            # every target, 60 s each
#   ./scripts/fuzz.sh 600        # 10 minutes each
#   ./scripts/fuzz.sh 60 parse_config
#   TD_FUZZ_FLAGS="--dev -s none" ./scripts/fuzz.sh 300 http1_response
#
# TD_FUZZ_FLAGS go to `cargo fuzz run`: the default build (optimized, AddressSanitizer,
# one codegen unit) needs about 20 GB of memory for the AWS SDK crates; `--dev -s none` builds
# in a few minutes and still guides the fuzzer by coverage (the code is safe Rust).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_config validate_model http1_response)
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  if [ "$t" = http1_response ]; then
    # Seeds: well-formed answers of each framing, for the fuzzer to break.
    printf 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' >"$corpus/length"
    printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n' >"$corpus/chunked"
    printf 'HTTP/1.0 200 OK\r\nInference-Header-Content-Length: 2\r\n\r\n{}' >"$corpus/close"
    printf 'HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n' >"$corpus/no-content"
  else
    find model-repos tests/fixtures -name '*.pbtxt' -exec cp {} "$corpus/" \; 2>/dev/null || true
    for f in model-repos/*/*/config.pbtxt; do cp "$f" "$corpus/$(echo "$f" | tr / _)"; done
  fi
  echo "==> fuzzing $t for ${seconds}s" >&2
  # -timeout: any single input taking over 5 s counts as a hang; -rss_limit_mb bounds memory.
  # shellcheck disable=SC2086
  cargo +nightly fuzz run ${TD_FUZZ_FLAGS:-} "$t" "$corpus" -- -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=65536
done
