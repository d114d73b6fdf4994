"""Compression building blocks: ONNX export and quantization, distillation, pruning, vocabulary trimming."""
