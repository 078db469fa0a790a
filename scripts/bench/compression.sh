#!/usr/bin/env bash
# Measurement behind `push --compression auto`: how much gzip (levels 1 and 6) and zstd (levels 1
# and 3) gain on real model weights (fp32, fp16 and bf16, from scripts/bench/weights.py) and on
# random bytes, how fast each compresses and decompresses on one core, and what `auto` does with
# each kind (uncompressed under a 10% gain, gzip from it).
#
# The codecs here are Python's (the system zlib and libzstd). triton-deploy's deflate is zlib-rs,
# whose level 1, like zlib-ng's, uses fixed Huffman tables only and grows weights by ~5%: `auto`
# samples and compresses at level 2 and up, which gain what zlib's levels do here (the unit test
# `the_sample_sees_what_gzip_gains_on_weights...` holds it to that).
#
#   ./scripts/bench/compression.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/venv.sh
venv="$(bench_venv)"
"$venv/bin/python" - <<'PY'
import sys, time, zlib
sys.path.insert(0, "scripts/bench")
import weights
import zstandard

def best(f, d, runs=3):
    t = min(timeit(f, d) for _ in range(runs))
    return t

def timeit(f, d):
    t = time.perf_counter(); f(d); return time.perf_counter() - t

codecs = [
    ("gzip-1", lambda d: zlib.compress(d, 1), zlib.decompress),
    ("gzip-6", lambda d: zlib.compress(d, 6), zlib.decompress),
    ("zstd-1", lambda d: zstandard.ZstdCompressor(level=1).compress(d), lambda c: zstandard.ZstdDecompressor().decompress(c)),
    ("zstd-3", lambda d: zstandard.ZstdCompressor(level=3).compress(d), lambda c: zstandard.ZstdDecompressor().decompress(c)),
]
print(f"{'weights':8} {'MiB':>5}  {'codec':7} {'gain':>6}  {'compress':>10}  {'decompress':>10}  (one core)")
for k in ("fp32", "fp16", "bf16", "random"):
    d = weights.kind(k)
    gains = {}
    for name, c, u in codecs:
        out = c(d)
        assert u(out) == d
        gains[name] = 100 * (1 - len(out) / len(d))
        ct, ut = best(c, d), best(u, out)
        print(f"{k:8} {len(d) / 2**20:5.1f}  {name:7} {gains[name]:5.1f}%  {len(d) / ct / 1e6:6.0f} MB/s  {len(d) / ut / 1e6:6.0f} MB/s")
    verdict = "gzip (level 2 over 64 MiB, 6 below)" if gains["gzip-6"] >= 10 else "uncompressed"
    print(f"{k:8} {'':5}  auto    -> {verdict}")
PY
