"""Export choices and defaults: a module without heavy imports, so ``--help`` stays instant."""

EXPORTERS = ('dynamo', 'torchscript')
DEFAULT_EXPORTER = 'dynamo'
#: the lowest opset any of our graphs needs (RoiAlign's coordinate_transformation_mode is 16)
MIN_OPSET = 16
DEFAULT_OPSET = 18
#: precisions of an exported file: FP16 converts the feature extractor after export
#: (deploy.onnx_graph.mixed_precision); post-processing stays FP32
PRECISIONS = ('fp32', 'fp16')
DEFAULT_PRECISION = 'fp32'
