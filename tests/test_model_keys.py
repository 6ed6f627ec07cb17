"""State-dict keys and shapes of the zoo models equal MMDetection's (so its checkpoints load)."""

import json
from pathlib import Path

import pytest

from deploy.apis.model import init_detector

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet_state_dict_keys.json').read_text())

#: every shipped R50-class config; its file stem is the MMDetection config name in the manifest
#: (2.x names, DINO 3.x: its keys include the training-only dn_query_generator, which must load)
SHIPPED = [
    'configs/retinanet/retinanet_r50_fpn_1x_coco.py',
    'configs/fcos/fcos_r50_caffe_fpn_gn-head_4x4_1x_coco.py',
    'configs/fsaf/fsaf_r50_fpn_1x_coco.py',
    'configs/ssd/ssd300_coco.py',
    'configs/yolo/yolov3_d53_mstrain-608_273e_coco.py',
    'configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py',
    'configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py',
    'configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py',
    'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py',
    'configs/cornernet/cornernet_hourglass104_mstest_10x5_210e_coco.py',
    'configs/detr/detr_r50_8x2_150e_coco.py',
    'configs/point_rend/point_rend_r50_caffe_fpn_mstrain_1x_coco.py',
    'configs/dino/dino-4scale_r50_8xb2-12e_coco.py',
]


@pytest.mark.parametrize('config', SHIPPED)
def test_state_dict_matches_mmdetection(config):
    stem = Path(config).stem
    model, _ = init_detector(str(ROOT / config))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    # Where 3.x's layout differs (DETR), the zoo has 3.x's; 2.x keys are mapped on load.
    theirs = {k: shape for k, shape in MANIFEST.get(f'{stem}@3.x', MANIFEST[stem])}
    assert sorted(set(theirs) - set(ours)) == [], 'keys MMDetection has and we lack'
    assert sorted(set(ours) - set(theirs)) == [], 'keys we have and MMDetection lacks'
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}, 'shape mismatches'
