"""Real model weights for the push and compression benchmarks.

The weights are the float32 tensors of PaddleOCR's PP-OCRv4 detection and recognition models and
its direction classifier, as shipped in the `rapidocr-onnxruntime` wheel (pinned below): trained
weights, not noise. From them:

  fp32    the tensors as they are
  fp16    cast to IEEE half precision (what most GPU deployments ship)
  bf16    truncated to bfloat16 (the top half of each float32)
  random  os.urandom, the same length (the incompressible bound)

  python weights.py table                   # one line per kind: name and bytes
  python weights.py write KIND MIB FILE     # KIND's bytes tiled to MIB MiB in FILE
"""
import glob
import os
import subprocess
import sys
import zipfile

WHEEL = "rapidocr-onnxruntime==1.3.24"


def cache_dir():
    d = os.path.join(os.environ.get("TD_VENV_DIR", os.path.join(os.getcwd(), ".stack")), "bench-weights")
    os.makedirs(d, exist_ok=True)
    return d


def fp32_bytes():
    import numpy as np
    import onnx
    from onnx import numpy_helper

    d = cache_dir()
    out = os.path.join(d, "fp32.bin")
    if os.path.exists(out):
        return open(out, "rb").read()
    if not glob.glob(os.path.join(d, "*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", WHEEL, "-d", d], check=True)
    whl = glob.glob(os.path.join(d, "*.whl"))[0]
    parts = []
    with zipfile.ZipFile(whl) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".onnx")):
            m = onnx.load_from_string(z.read(name))
            # These models keep their weights in Constant nodes, others in initializers.
            tensors = list(m.graph.initializer) + [
                a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
            ]
            for t in tensors:
                a = numpy_helper.to_array(t)
                if a.dtype == np.float32:
                    parts.append(a.tobytes())
    data = b"".join(parts)
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)
    return data


def kind(name):
    import numpy as np

    fp32 = fp32_bytes()
    a = np.frombuffer(fp32, dtype=np.float32)
    if name == "fp32":
        return fp32
    if name == "fp16":
        with np.errstate(over="ignore"):
            return a.astype(np.float16).tobytes()
    if name == "bf16":
        return (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if name == "random":
        return os.urandom(len(fp32))
    raise SystemExit(f"unknown kind {name!r}: fp32, fp16, bf16 or random")


def main():
    if sys.argv[1:2] == ["table"]:
        for k in ("fp32", "fp16", "bf16", "random"):
            print(k, len(kind(k)))
    elif sys.argv[1:2] == ["write"] and len(sys.argv) == 5:
        data = kind(sys.argv[2])
        want = int(sys.argv[3]) << 20
        with open(sys.argv[4], "wb") as f:
            while want > 0:
                # Random data is drawn afresh per piece, never repeated.
                piece = os.urandom(len(data)) if sys.argv[2] == "random" else data
                f.write(piece[:want])
                want -= min(want, len(piece))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
