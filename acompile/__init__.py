"""acompile: map ONNX models onto analog in-memory-computing accelerators."""

__version__ = "0.1.0"
