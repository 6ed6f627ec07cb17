"""FP16 ONNX files and graphs that take decoded images (``--preprocess-in-graph``), on the
bundled RetinaNet: verified against PyTorch, post-processing kept in float32, bad input named."""

import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT

from deploy.apis.export import export_model
from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.datasets.pipeline import DecodedImagePipeline, TestPipeline
from deploy.errors import BackendError, ExportError, ImageError
from deploy.ops.preprocess import preprocess_image
from deploy.spec import read_onnx_spec

CFG = str(ROOT / 'configs' / 'bundled' / 'retinanet_r18_tiny_synthetic.py')
CKPT = str(ROOT / 'checkpoints' / 'retinanet_r18_tiny_synthetic.pth')
IMAGE = str(ROOT / 'demo' / 'demo.jpg')
QUIET = dict(logger=lambda *a: None, exporter='torchscript', input_img=IMAGE)


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp('precision')
    fp16 = export_model(
        CFG, CKPT, root / 'fp16.onnx', dynamic=True, verify=True, precision='fp16', **QUIET
    )
    in_graph = export_model(
        CFG,
        CKPT,
        root / 'image.onnx',
        dynamic=True,
        verify=True,
        preprocess_in_graph=True,
        **QUIET,
    )
    return dict(root=root, fp16=fp16, in_graph=in_graph)


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
    types.update({v.name: v.type.tensor_type.elem_type for v in graph.output})
    types.update({i.name: i.data_type for i in graph.initializer})
    return types


def test_fp16_export_verifies_and_keeps_postprocessing_float32(exports):
    result = exports['fp16']
    assert result.verified, 'every case passed the FP16 tolerances'
    assert all(r.stats.num_ref > 0 and r.parity_ap >= 0.85 for r in result.verify_rows)
    model = onnx.load(str(result.output_file))
    assert read_onnx_spec(model).precision == 'fp16'
    types = _value_types(model)
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == 'Conv']
    assert convs and all(types[n.input[1]] == f16 for n in convs), 'conv weights are FP16'
    post = [n for n in model.graph.node if n.op_type in ('NonMaxSuppression', 'TopK')]
    assert post and all(types[n.input[0]] == f32 for n in post), 'decode, top-k, NMS in FP32'
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type in (f32, onnx.TensorProto.INT64)


def test_fp16_on_a_device_without_fp16_kernels_is_named(tmp_path, monkeypatch):
    """ONNX Runtime's CPU provider runs FP16 files (it casts where it lacks a float16 kernel);
    a provider that cannot run them fails at load. The export checks that on the requested device
    before saving, and says so in one line (simulated: no such provider is installed here)."""
    import deploy.apis.export as export_api

    real = export_api.OnnxRuntimeBackend

    def no_fp16_kernels(model_file, device='cpu', num_threads=None):
        if read_onnx_spec(model_file).precision == 'fp16':
            raise BackendError(
                f'ONNX Runtime cannot load {model_file}: Could not find an implementation for '
                "Conv(11) node with name '/backbone/conv1/Conv'"
            )
        return real(model_file, device=device, num_threads=num_threads)

    monkeypatch.setattr(export_api, 'OnnxRuntimeBackend', no_fp16_kernels)
    out = tmp_path / 'm.onnx'
    with pytest.raises(ExportError, match='FP16 model cannot run on cpu.*Conv') as info:
        export_model(CFG, CKPT, out, precision='fp16', **QUIET)
    assert '\n' not in str(info.value) and '--precision fp32' in str(info.value)
    assert not out.exists() and not list(tmp_path.glob('.*.tmp'))


def test_in_graph_preprocessing_verifies_and_reports_the_resize_difference(exports):
    result = exports['in_graph']
    assert result.verified
    # The same detections as the standard export: the pipeline in the graph is OpenCV's exactly.
    assert all(r.stats.exact_fraction >= 0.95 and r.parity_ap >= 0.99 for r in result.verify_rows)
    spec = read_onnx_spec(result.output_file)
    assert spec.inputs.layout == 'bgr_uint8' and spec.inputs.names == ('image',)
    graph = onnx.load(str(result.output_file)).graph
    [image] = graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ['batch', 'height', 'width', 3]


def test_in_graph_preprocessing_equals_the_opencv_pipeline():
    from deploy.config import get_preprocess_cfg, load_config

    pre = get_preprocess_cfg(load_config(CFG))
    image = cv2.imread(IMAGE)
    reference, meta = TestPipeline(pre)(image)
    ours, img_shape, scale = preprocess_image(
        torch.from_numpy(image)[None],
        pre.scale,
        pre.keep_ratio,
        pre.size_divisor,
        pre.pad_value,
        pre.mean,
        pre.std,
        pre.to_rgb,
    )
    assert tuple(ours.shape[1:]) == tuple(reference.shape)
    h, w = meta['img_shape']
    assert img_shape[0].tolist() == [h, w]
    np.testing.assert_allclose(scale[0].numpy(), meta['scale_factor'][:2], rtol=1e-6)
    torch.testing.assert_close(ours[0], reference, rtol=0, atol=1e-5)  # float rounding only


@pytest.mark.parametrize('seed', range(4))
def test_in_graph_resize_is_opencv_bit_for_bit(seed):
    from deploy.ops.preprocess import resize_like_opencv

    rng = np.random.default_rng(seed)
    for _ in range(10):
        h, w = (int(v) for v in rng.integers(8, 700, 2))
        new_h, new_w = (int(v) for v in rng.integers(8, 900, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        ours = resize_like_opencv(torch.from_numpy(image)[None], new_h, new_w)[0].numpy()
        assert np.array_equal(ours, expected), (h, w, new_h, new_w)


def test_keep_ratio_sizes_are_mmcvs():
    from deploy.datasets.pipeline import rescale_size
    from deploy.ops.preprocess import _keep_ratio_size

    for h in range(30, 1500, 37):
        for w in range(30, 1500, 41):
            (new_w, new_h), _ = rescale_size(w, h, (1333, 800))
            assert _keep_ratio_size(h, w, 1333, 800) == (new_h, new_w), (h, w)


def test_in_graph_model_on_images_of_any_size(exports):
    backend = OnnxRuntimeBackend(exports['in_graph'].output_file)
    image = cv2.imread(IMAGE)
    for size in ((120, 90), (600, 1000)):
        resized = cv2.resize(image, size)
        out = backend(dict(image=resized[None]))
        dets = out['dets'][0][out['labels'][0] >= 0]
        assert len(dets) > 0
        assert dets[:, [0, 2]].max() <= size[0] + 1e-3 and dets[:, [1, 3]].max() <= size[1] + 1e-3


def test_four_channel_image_is_one_clear_line(exports):
    rgba = np.zeros((64, 64, 4), np.uint8)
    with pytest.raises(ImageError, match='HxWx3 uint8 BGR'):
        DecodedImagePipeline()(rgba)
    backend = OnnxRuntimeBackend(exports['in_graph'].output_file)
    with pytest.raises(BackendError, match=r"input 'image'.*\[1, 64, 64, 4\].*3 channels"):
        backend(dict(image=rgba[None]))
    with pytest.raises(BackendError, match='uint8'):
        backend(dict(image=np.zeros((1, 64, 64, 3), np.float32)))


def test_dependency_free_demo_runs_without_the_package(exports, tmp_path):
    demo = ROOT / 'demo' / 'onnxruntime_demo.py'
    imports = {
        line.split()[1]
        for line in demo.read_text().splitlines()
        if line.startswith(('import ', 'from '))
    }
    allowed = {'argparse', 'colorsys', 'json', 'pathlib', 'sys', 'cv2', 'numpy', 'onnxruntime'}
    assert imports <= allowed, imports
    out = tmp_path / 'demo.png'
    proc = subprocess.run(
        [
            sys.executable,
            '-I',
            str(demo),
            str(exports['in_graph'].output_file),
            IMAGE,
            '--out-file',
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'star' in proc.stdout and out.is_file()
    assert cv2.imread(str(out)).shape == cv2.imread(IMAGE).shape
    missing = subprocess.run(
        [sys.executable, '-I', str(demo), str(tmp_path / 'none.onnx'), IMAGE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and 'Traceback' not in missing.stderr
    assert missing.stderr.strip() == f'error: no model file {tmp_path / "none.onnx"}'
