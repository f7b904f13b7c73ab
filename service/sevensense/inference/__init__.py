"""Model execution: ONNX Runtime sessions, batched inference, embedding post-processing."""
