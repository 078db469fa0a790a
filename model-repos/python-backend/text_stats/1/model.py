"""Byte length and word count of each string in a batch (Triton Python backend)."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            length = np.array([[len(t[0])] for t in text], dtype=np.int64)
            words = np.array([[len(t[0].split())] for t in text], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LENGTH", length),
                pb_utils.Tensor("WORDS", words),
            ]))
        return responses

    def finalize(self):
        pass
