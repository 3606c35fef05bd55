"""The onnxruntime session every model runs in, so the export's parity check and the server
run a model exactly alike."""

from __future__ import annotations

import onnxruntime as ort


def onnx_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """The session every model runs in (server and export parity check alike): one thread,
    sequential — requests are tiny and parallelism comes from worker processes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
