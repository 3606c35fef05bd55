"""Tests through real parts: Feast, Redis, onnxruntime, a real server on a real port."""
