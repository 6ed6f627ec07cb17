"""The export-parity table's models: how each is built, exported (once per run, shared by every
module that needs the same file) and fed, and what its graph must hold.

A row of the table (``tests/test_export_parity.py``) names a model, an exporter, a RoI mode and
a precision; :func:`exported` gives the eager model and its ONNX file for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from conftest import RETINANET_CFG, SMALL_RETINANET, made_once, random_batch, shared_path

from deploy.backends.tensorrt.compat import check_tensorrt_compat

from . import small_detr, small_dino, small_point_rend, small_single_stage, small_two_stage

#: ``(real image shapes, seed)`` of the cases every model is compared on: a padded batch of 2,
#: another size at batch 1, a batch of 3 with different real shapes (clipping per image)
CASES = [([(300, 400), (256, 380)], 0), ([(224, 160)], 1), ([(200, 300), (320, 250), (96, 128)], 2)]


@dataclass(frozen=True)
class Row:
    """One export compared with its eager model: ``model`` (a key of :data:`MODELS`) exported
    with ``exporter``, its RoI extractors in ``roi_mode`` (two-stage models), the file converted
    to ``precision``; ``slow`` rows run with ``pytest -m slow``."""

    model: str
    exporter: str
    roi_mode: str | None = None
    precision: str = 'fp32'
    slow: bool = False

    @property
    def id(self) -> str:
        return '-'.join(filter(None, (self.model, self.roi_mode, self.exporter, self.precision)))


@dataclass(frozen=True)
class Model:
    """How a model of the table is built (``build(roi_mode)``, seeded: every worker builds the
    same weights), fed (``batch(shapes, seed)``) and checked (``check_graph(graph, row)``)."""

    build: Callable[[str | None], torch.nn.Module]
    batch: Callable = random_batch
    trace_shapes: list = field(default_factory=lambda: CASES[0][0])
    cases: list = field(default_factory=lambda: CASES)
    dynamic_size: bool = True
    check_graph: Callable[[onnx.ModelProto, Row], None] = lambda graph, row: None
    #: at least this fraction of exact pairs (the tool's FP32 bar is 0.95)
    min_exact: float = 0.95
    #: DETR-style heads keep exactly ``max_per_img`` detections in every image
    detections_per_image: int | None = None


def input_dims(graph: onnx.ModelProto) -> dict[str, list]:
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.graph.input) + list(graph.graph.output)
    }


def ops_of(graph: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in graph.graph.node}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# --------------------------------------------------------------------------------------------
# the models
# --------------------------------------------------------------------------------------------
def _small_retinanet(roi_mode=None):
    from deploy.apis.model import init_detector
    from deploy.models.random_weights import make_detections_likely

    torch.manual_seed(0)
    model, _ = init_detector(str(RETINANET_CFG), cfg_options=dict(SMALL_RETINANET))
    return make_detections_likely(model)


def _check_dense(graph, row) -> None:
    assert 'NonMaxSuppression' in ops_of(graph)
    dims = input_dims(graph)
    fixed = row.model == 'ssd'  # SSD's pipeline gives 300 x 300: dynamic batch only
    assert dims['input'] == (['batch', 3, 300, 300] if fixed else ['batch', 3, 'height', 'width'])
    assert dims['dets'] == ['batch', 'num_dets', 5] and dims['labels'] == ['batch', 'num_dets']


def _ssd_batch(shapes, seed=0):
    img, metas = random_batch(shapes, seed=seed)
    return img[..., :300, :300].contiguous(), metas  # no padding in SSD's pipeline


def _check_two_stage(graph, row) -> None:
    ops = [n.op_type for n in graph.graph.node]
    assert 'NonMaxSuppression' in ops and 'RoiAlign' in ops
    assert ('NonZero' in ops) == (row.roi_mode == 'nonzero')
    for node in graph.graph.node:
        if node.op_type == 'RoiAlign':
            assert _attrs(node)['coordinate_transformation_mode'] == b'half_pixel'
    dims = input_dims(graph)
    assert dims['input'] == ['batch', 3, 'height', 'width']
    assert dims['dets'] == ['batch', 'num_dets', 5]
    if 'masks' in dims:
        assert dims['masks'] == ['batch', 'num_dets', 28, 28]


def _check_point_rend(graph, row) -> None:
    nodes = graph.graph.node
    ops = ops_of(graph)
    assert {'GridSample', 'TopK', 'ScatterElements', 'RoiAlign', 'NonMaxSuppression'} <= ops
    assert ('NonZero' in ops) == (row.roi_mode == 'nonzero')
    attrs = [(n.op_type, _attrs(n)) for n in nodes]
    # point_sample: bilinear, zero padding, align_corners=False
    for op, a in attrs:
        if op == 'GridSample':
            assert (a['mode'], a['padding_mode'], a['align_corners']) == (b'bilinear', b'zeros', 0)
    # the subdivision's 2x upsampling: linear, half-pixel (the FPN's are nearest)
    linear = [a for op, a in attrs if op == 'Resize' and a['mode'] == b'linear']
    assert len(linear) == 3
    assert all(a['coordinate_transformation_mode'] == b'half_pixel' for a in linear)
    dims = input_dims(graph)
    assert dims['input'] == ['batch', 3, 'height', 'width']
    assert dims['masks'] == ['batch', 'num_dets', 56, 56]
    # TensorRT: every TopK k (the 784 uncertain points among them) bounded below its limit of
    # 3840, and within its axis at the smallest input of a profile (evaluated).
    assert check_tensorrt_compat(graph, {'input': [1, 3, 64, 64], 'img_shape': [1, 2]}) == []


def _check_detr(graph, row) -> None:
    assert input_dims(graph)['input'] == ['batch', 3, 'height', 'width']


def _check_dino(graph, row) -> None:
    _check_detr(graph, row)
    ops = ops_of(graph)  # the deformable attention samples with GridSample; no NMS, no RoIs
    assert 'GridSample' in ops and not {'NonMaxSuppression', 'RoiAlign'} & ops


def _small_dino(roi_mode=None):
    model = small_dino.build_small_dino()
    # traced on a crop smaller than every image it is compared on
    model.dynamic_trace_size = (128, 160)
    return model


def _single_stage(name: str) -> Model:
    shapes = small_single_stage.BATCH_SHAPES[name]
    other = shapes[0] if name == 'ssd' else small_single_stage.OTHER_SHAPE[name]
    return Model(
        build=lambda roi_mode: small_single_stage.build_small(name),
        batch=_ssd_batch if name == 'ssd' else random_batch,
        trace_shapes=shapes,
        cases=[(shapes, 0), ([other], 1)],  # the traced batch, then another size at batch 1
        dynamic_size=name != 'ssd',
        check_graph=_check_dense,
    )


#: the short names of the two-stage configs
TWO_STAGE = {stem.removesuffix('_r50_fpn_1x_coco'): stem for stem in small_two_stage.CONFIGS}

MODELS: dict[str, Model] = {
    # traced at the sizes of conftest's small_retinanet_onnx: the same file, made once
    'retinanet': Model(
        build=_small_retinanet, trace_shapes=[(160, 224), (128, 192)], check_graph=_check_dense
    ),
    **{name: _single_stage(name) for name in small_single_stage.MODELS},
    'detr': Model(
        build=lambda roi_mode: small_detr.build_small(),
        cases=[([(200, 280), (176, 250)], 0), ([(150, 230)], 1), ([(97, 130), (160, 100)], 2)],
        check_graph=_check_detr,
        min_exact=1.0,
        detections_per_image=10,
    ),
    'dino': Model(
        build=_small_dino,
        trace_shapes=[(200, 280), (176, 250)],
        cases=[
            ([(200, 280), (176, 250)], 0),
            ([(150, 230)], 1),
            ([(97, 130), (160, 100)], 2),
            ([(24, 30)], 3),  # fewer tokens (15) than queries (30): the query count is computed
        ],
        check_graph=_check_dino,
        min_exact=1.0,
        detections_per_image=20,
    ),
    **{
        name: Model(
            build=lambda roi_mode, stem=stem: small_two_stage.build_small(stem, roi_mode)[0],
            check_graph=_check_two_stage,
        )
        for name, stem in TWO_STAGE.items()
    },
    'point_rend': Model(
        build=lambda roi_mode: small_point_rend.build_small(roi_mode)[0],
        batch=small_point_rend.pixel_batch,
        check_graph=_check_point_rend,
        min_exact=0.99,
    ),
}


# --------------------------------------------------------------------------------------------
# the exports, made once per run
# --------------------------------------------------------------------------------------------
@functools.cache
def eager_model(model: str, roi_mode: str | None) -> torch.nn.Module:
    return MODELS[model].build(roi_mode)


def export_path(row: Row) -> Path:
    if row.model == 'retinanet' and row.precision == 'fp32':
        return shared_path('small_retinanet') / f'retinanet_{row.exporter}.onnx'
    return shared_path('export_parity') / f'{row.id}.onnx'


def exported(row: Row) -> tuple[torch.nn.Module, Path]:
    """The eager model of ``row`` and its export (made by the first worker that needs it)."""
    from deploy.export import onnx_export

    model = eager_model(row.model, row.roi_mode)
    path = export_path(row)
    with made_once(path):
        if path.is_file():
            return model, path
        if row.precision == 'fp32':
            spec = MODELS[row.model]
            img, metas = spec.batch(spec.trace_shapes)
            img_shape = torch.tensor([m['img_shape'] for m in metas], dtype=torch.float32)
            onnx_export.export_onnx(
                model,
                img,
                img_shape,
                path,
                exporter=row.exporter,
                dynamic=True,
                dynamic_size=spec.dynamic_size,
            )
        elif row.precision == 'fp16':
            from deploy.fileio import write_atomic
            from deploy.onnx_graph.mixed_precision import convert_to_mixed_fp16

            _, fp32 = exported(Row(row.model, row.exporter, row.roi_mode))
            half = convert_to_mixed_fp16(onnx.load(str(fp32)))
            write_atomic(path, half.SerializeToString())
        else:
            raise ValueError(f'no {row.precision} rows in the table')
    return model, path
