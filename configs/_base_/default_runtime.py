# Runtime settings of MMDetection 2.x (kept short: deployment only needs the chain to resolve),
# plus the defaults of our own deploy keys, which every model config inherits.
checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]

# Deploy: ONNX export settings. input_shape=None exports with dynamic height/width; a (h, w)
# tuple fixes the input size (batch is always dynamic).
onnx_config = dict(opset_version=17, input_shape=None)
# Deploy: TensorRT settings (optimisation-profile min/opt/max shapes, fp16, workspace size).
# Empty means the backend's defaults; the TensorRT backend documents the keys it reads.
backend_config = dict()
