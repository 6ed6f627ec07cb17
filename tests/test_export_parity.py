"""Every exported detector against its eager reference, as one table of (model, exporter, RoI
mode, precision) rows.

Each export is dynamic (batch, and height and width where the pipeline does not fix them), made
once per run (``tests/helpers/export_parity.py``), and runs in ONNX Runtime on a padded batch,
another size at batch 1 and a batch of 3 with different real shapes. The comparison is the tool's
own (``pytorch2onnx.py --verify``: ``deploy/export/verify.py``): detections matched by IoU, held
to the tolerances of the file's precision. FP32 files are also held to the drift seen on these
models (score and box errors), tighter than the tool's bar.
"""

import onnx
import pytest
from helpers.export_parity import MODELS, TWO_STAGE, Row, exported
from helpers.small_single_stage import MODELS as SINGLE_STAGE

from deploy.backends.onnxruntime import OnnxRuntimeBackend
from deploy.export.verify import TOLERANCES, VerifyCase, format_verify_table, verify_backend
from deploy.spec import read_onnx_spec

#: torch.export rows of the default run: the dense-head path through RetinaNet, the two-stage
#: nonzero RoI mode through Mask R-CNN, the masked one through PointRend, and DETR
QUICK_DYNAMO = {('retinanet', None), ('mask_rcnn', 'nonzero'), ('point_rend', 'masked')}

ROWS = [
    Row('retinanet', 'dynamo'),
    Row('retinanet', 'torchscript'),
    Row('retinanet', 'dynamo', precision='fp16'),
    *(Row('detr', exporter) for exporter in ('dynamo', 'torchscript')),
    Row('dino', 'torchscript'),
    Row('dino', 'dynamo', slow=True),  # about 2 minutes for this small model on 2 cores
    *(
        Row(name, exporter, slow=exporter == 'dynamo')
        for name in SINGLE_STAGE
        for exporter in ('dynamo', 'torchscript')
    ),
    *(
        Row(
            name,
            exporter,
            roi_mode,
            slow=exporter == 'dynamo' and (name, roi_mode) not in QUICK_DYNAMO,
        )
        for name in TWO_STAGE
        for roi_mode in ('masked', 'nonzero')
        for exporter in ('dynamo', 'torchscript')
    ),
    Row('point_rend', 'torchscript', 'nonzero'),
    Row('point_rend', 'dynamo', 'masked'),
    Row('point_rend', 'dynamo', 'nonzero', slow=True),
    Row('point_rend', 'torchscript', 'masked', slow=True),
]


@pytest.mark.parametrize(
    'row', [pytest.param(r, id=r.id, marks=[pytest.mark.slow] if r.slow else []) for r in ROWS]
)
def test_export_matches_eager(row):
    model, path = exported(row)
    spec = MODELS[row.model]
    # the exporters leave the model as they found it (the TorchScript one used to switch it to
    # training mode, turning DETR's dropout on)
    assert not any(m.training for m in model.modules())
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert {o.domain for o in graph.opset_import} <= {'', 'ai.onnx'}, 'no custom op domains'
    assert read_onnx_spec(path).exporter == row.exporter
    spec.check_graph(graph, row)

    cases = [
        VerifyCase(
            'x'.join(map(str, shapes[0])) + f' batch {len(shapes)}', *spec.batch(shapes, seed=seed)
        )
        for shapes, seed in spec.cases
    ]
    rows = verify_backend(
        model, OnnxRuntimeBackend(path), cases, tolerances=TOLERANCES[row.precision]
    )
    table = format_verify_table(rows, 'onnxruntime')
    # non-vacuous per image, not only per batch
    assert all(r.ref_counts and min(r.ref_counts) > 0 for r in rows), [r.ref_counts for r in rows]
    if spec.detections_per_image is not None:
        assert {n for r in rows for n in r.ref_counts} == {spec.detections_per_image}
    assert all(r.passed for r in rows), table
    if row.precision == 'fp32':
        for r in rows:
            s = r.stats
            assert s.exact_fraction >= spec.min_exact, table
            assert s.max_score_err < 1e-4 and s.max_box_err < 0.01, table
            assert s.min_mask_iou is None or s.min_mask_iou >= 0.99, table
