"""Character-class features of a string (Triton Python backend), the first step of `pipeline`."""
import numpy as np
import triton_python_backend_utils as pb_utils


def features(raw: bytes) -> list:
    s = raw.decode("utf-8", errors="replace")
    n = max(len(s), 1)
    return [len(s) / 100.0, sum(c.isalpha() for c in s) / n, sum(c.isdigit() for c in s) / n,
            sum(c.isspace() for c in s) / n, sum(c.isupper() for c in s) / n,
            sum(c in ".,;:!?" for c in s) / n, len(s.split()) / 20.0, float(s.endswith("?"))]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            out = np.array([features(t[0]) for t in text], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("FEATURES", out)]))
        return responses
