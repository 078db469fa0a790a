# An "onnxruntime" backend for the CPU tritonserver image, as a Triton python-based backend
# (backends/onnxruntime/model.py): NVIDIA's ONNX Runtime backend is a C++ library this build of
# Triton lacks, so models with `backend: "onnxruntime"` or `platform: "onnxruntime_onnx"` run on
# ONNX Runtime's Python API instead, on CPU. Triton's own core does everything around it
# (configuration checks, batching, statistics, the protocol); this file only runs the graph.
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        name = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], name)
        options = ort.SessionOptions()
        # One thread per instance: Triton runs instances side by side.
        options.intra_op_num_threads = int(
            config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value", "1")
        )
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i["name"] for i in config.get("input", [])]
        self.outputs = [o["name"] for o in config.get("output", [])]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feed = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:  # an optional input left out
                        continue
                    array = tensor.as_numpy()
                    if array.dtype == np.object_:
                        # Triton gives BYTES as bytes; ONNX Runtime's strings are str.
                        array = np.vectorize(
                            lambda b: b.decode("utf-8") if isinstance(b, bytes) else b,
                            otypes=[np.object_],
                        )(array)
                    feed[name] = array
                results = self.session.run(self.outputs, feed)
                tensors = []
                for name, value in zip(self.outputs, results):
                    value = np.asarray(value)
                    if value.dtype.kind in ("U", "O"):
                        value = np.vectorize(
                            lambda s: s.encode("utf-8") if isinstance(s, str) else s,
                            otypes=[np.object_],
                        )(value)
                    tensors.append(pb_utils.Tensor(name, value))
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # the request fails, the model stays up
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))
                )
        return responses
