"""nudge: purchase propensity and best send time over gRPC, from Feast features and ONNX models."""
