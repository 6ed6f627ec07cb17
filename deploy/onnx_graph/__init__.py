"""ONNX graph transformations shared by the export and the backends (below both)."""
