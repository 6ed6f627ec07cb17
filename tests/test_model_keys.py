"""State-dict keys and shapes of the zoo models equal MMDetection's (so its checkpoints load)."""

import json
from pathlib import Path

import pytest

from deploy.apis.model import init_detector

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / 'tests' / 'data' / 'mmdet_state_dict_keys.json').read_text())

#: shipped config -> MMDetection 2.x config stem in the manifest (3.x is identical for these)
SHIPPED = {
    'configs/retinanet/retinanet_r50_fpn_1x_coco.py': 'retinanet_r50_fpn_1x_coco',
}


@pytest.mark.parametrize('config,stem', sorted(SHIPPED.items()))
def test_state_dict_matches_mmdetection(config, stem):
    model, _ = init_detector(str(ROOT / config))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape in MANIFEST[stem]}
    assert sorted(set(theirs) - set(ours)) == [], 'keys MMDetection has and we lack'
    assert sorted(set(ours) - set(theirs)) == [], 'keys we have and MMDetection lacks'
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}, 'shape mismatches'
