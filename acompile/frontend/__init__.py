"""ONNX in: safe loading into the IR (``load``), the op-support table (``ops``), IR back to ONNX for tests."""
