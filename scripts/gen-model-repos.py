#!/usr/bin/env python3
"""Writes the tiny real ONNX models of `model-repos/` (run by hand when the examples change; the files
are committed). Needs the `onnx` package: ./scripts/test.sh's venv has it (`.venv/bin/python`)."""
import os
import sys

import onnx
from onnx import TensorProto, helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model-repos")


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.checker.check_model(model)
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString(deterministic=True))


def model(graph):
    m = helper.make_model(graph, producer_name="triton-deploy", opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def add_sub(width=16):
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, batched along dim 0."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in ("INPUT0", "INPUT1")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in ("OUTPUT0", "OUTPUT1")]
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    return model(helper.make_graph(nodes, "add_sub", ins, outs))


def string_identity():
    """A BYTES (string) tensor passed through unchanged."""
    i = helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 1])
    o = helper.make_tensor_value_info("TEXT_OUT", TensorProto.STRING, ["batch", 1])
    return model(helper.make_graph([helper.make_node("Identity", ["TEXT"], ["TEXT_OUT"])], "string_identity", [i], [o]))


def scale(factor):
    """y = x * factor, with the factor an initializer; version N multiplies by N."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [float(factor)])
    return model(helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "scale", [x], [y], [k]))


def linear_classifier():
    """scores = softmax(tokens · W): 8 FP32 features in, 2 class scores out."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 2], [((i * 7 + j * 3) % 5 - 2) / 4.0 for i in range(8) for j in range(2)])
    nodes = [helper.make_node("MatMul", ["features", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
    return model(helper.make_graph(nodes, "linear_classifier", [x], [y], [w]))


def main():
    save(add_sub(), os.path.join(ROOT, "simple-onnx", "add_sub", "1", "model.onnx"))
    save(string_identity(), os.path.join(ROOT, "strings", "string_identity", "1", "model.onnx"))
    for v in (1, 2, 3):
        save(scale(v), os.path.join(ROOT, "multi-version", "scale", str(v), "model.onnx"))
    save(linear_classifier(), os.path.join(ROOT, "ensemble", "classifier", "1", "model.onnx"))
    print("wrote models under", os.path.normpath(ROOT), file=sys.stderr)


if __name__ == "__main__":
    main()
