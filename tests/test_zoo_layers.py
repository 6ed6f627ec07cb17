"""Zoo building blocks: checkpoint key layouts, ResNet/FPN behaviour, anchors, coders, export."""

import json
import math
import os
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from deploy.errors import ConfigError
from deploy.models.backbones import ResNet
from deploy.models.layers import ConvModule, Scale, build_activation_layer, build_norm_layer
from deploy.models.necks import FPN
from deploy.models.task_utils import (
    AnchorGenerator,
    DeltaXYWHBBoxCoder,
    DistancePointBBoxCoder,
    TBLRBBoxCoder,
)
from deploy.registry import MODELS

MANIFEST = os.path.join(os.path.dirname(__file__), 'data', 'mmdet_state_dict_keys.json')
RETINANET = 'retinanet_r50_fpn_1x_coco'
FCOS = 'fcos_r50_caffe_fpn_gn-head_4x4_1x_coco'
RETINA_ANCHORS = dict(
    type='AnchorGenerator',
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128],
)


@pytest.fixture(scope='module')
def manifest() -> dict:
    with open(MANIFEST) as f:
        return json.load(f)


def expected_keys(manifest: dict, model: str, prefix: str) -> list:
    return [(k[len(prefix) :], tuple(s)) for k, s in manifest[model] if k.startswith(prefix)]


def keys_of(module: nn.Module) -> list:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


# -- layers ----------------------------------------------------------------------------------
def test_conv_module_names_and_auto_bias():
    plain = ConvModule(8, 16, 3, padding=1, act_cfg=None)
    assert [k for k, _ in keys_of(plain)] == ['conv.weight', 'conv.bias']
    gn = ConvModule(8, 16, 3, padding=1, norm_cfg=dict(type='GN', num_groups=4))
    assert [k for k, _ in keys_of(gn)] == ['conv.weight', 'gn.weight', 'gn.bias']
    assert isinstance(gn.activate, nn.ReLU) and gn.norm is gn.gn
    bn = ConvModule(
        8, 16, 1, norm_cfg=dict(type='SyncBN'), act_cfg=dict(type='LeakyReLU', negative_slope=0.1)
    )
    assert isinstance(bn.bn, nn.BatchNorm2d) and bn.conv.bias is None
    assert bn.activate.negative_slope == 0.1
    assert not hasattr(plain, 'activate')
    x = torch.randn(2, 8, 5, 5)
    assert gn(x).shape == (2, 16, 5, 5) and (gn(x) >= 0).all()


def test_norm_and_activation_builders():
    name, layer = build_norm_layer(dict(type='BN', requires_grad=False), 32, postfix=2)
    assert name == 'bn2' and isinstance(layer, nn.BatchNorm2d)
    assert not any(p.requires_grad for p in layer.parameters())
    name, layer = build_norm_layer(dict(type='GN', num_groups=8), 32)
    assert name == 'gn' and layer.num_groups == 8
    assert build_norm_layer(dict(type='LN'), 32)[0] == 'ln'
    assert isinstance(build_activation_layer(dict(type='Sigmoid')), nn.Sigmoid)
    with pytest.raises(ConfigError, match='num_groups'):
        build_norm_layer(dict(type='GN'), 32)
    with pytest.raises(ConfigError, match='unsupported norm'):
        build_norm_layer(dict(type='FancyNorm'), 32)


def test_scale():
    scale = MODELS.build(dict(type='Scale', scale=2.0))
    assert isinstance(scale, Scale)
    assert keys_of(scale) == [('scale', ())]
    assert torch.equal(scale(torch.ones(3)), torch.full((3,), 2.0))


# -- checkpoint layouts ------------------------------------------------------------------------
def test_resnet50_and_fpn_keys_match_retinanet(manifest):
    backbone = MODELS.build(
        dict(
            type='ResNet',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,
            style='pytorch',
            init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
        )
    )
    assert keys_of(backbone) == expected_keys(manifest, RETINANET, 'backbone.')
    neck = MODELS.build(
        dict(
            type='FPN',
            in_channels=[256, 512, 1024, 2048],
            out_channels=256,
            start_level=1,
            add_extra_convs='on_input',
            num_outs=5,
        )
    )
    assert keys_of(neck) == expected_keys(manifest, RETINANET, 'neck.')


def test_caffe_resnet_and_fpn_keys_match_fcos(manifest):
    backbone = ResNet(
        depth=50, style='caffe', frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=False)
    )
    assert keys_of(backbone) == expected_keys(manifest, FCOS, 'backbone.')
    neck = FPN(
        [256, 512, 1024, 2048],
        256,
        num_outs=5,
        start_level=1,
        add_extra_convs='on_output',
        relu_before_extra_convs=True,
    )
    assert keys_of(neck) == expected_keys(manifest, FCOS, 'neck.')
    assert neck.fpn_convs[3].conv.in_channels == 256  # on_output: P6 from P5, not C5


# -- ResNet behaviour ------------------------------------------------------------------------
@pytest.mark.parametrize('depth', [18, 34])
def test_basic_block_resnet_shapes(depth):
    model = ResNet(depth=depth, base_channels=16).eval()
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (1, 16, 16, 24),
        (1, 32, 8, 12),
        (1, 64, 4, 6),
        (1, 128, 2, 3),
    ]
    assert len(model.layer3) == {18: 2, 34: 6}[depth]


def test_resnet_out_indices_and_odd_sizes():
    model = ResNet(depth=50, base_channels=8, out_indices=(3,)).eval()
    (out,) = model(torch.randn(1, 3, 65, 81))
    assert out.shape == (1, 256, 3, 3)
    assert hasattr(model, 'layer4') and hasattr(model, 'layer1')


def test_caffe_vs_pytorch_stride_placement():
    pytorch = ResNet(depth=50, base_channels=8, style='pytorch')
    caffe = ResNet(depth=50, base_channels=8, style='caffe')
    for name in ('layer2', 'layer3', 'layer4'):
        first_p, first_c = getattr(pytorch, name)[0], getattr(caffe, name)[0]
        assert first_p.conv1.stride == (1, 1) and first_p.conv2.stride == (2, 2)
        assert first_c.conv1.stride == (2, 2) and first_c.conv2.stride == (1, 1)
        assert first_p.downsample[0].stride == first_c.downsample[0].stride == (2, 2)
    assert pytorch.layer1[0].conv1.stride == pytorch.layer1[0].conv2.stride == (1, 1)
    # Same weights, same output shapes, different numbers (the stride sits elsewhere).
    caffe.load_state_dict(pytorch.state_dict())
    for module in list(caffe.modules()) + list(pytorch.modules()):
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
    caffe.load_state_dict(pytorch.state_dict())
    x = torch.randn(1, 3, 64, 64)
    out_p, out_c = pytorch.eval()(x), caffe.eval()(x)
    assert [o.shape for o in out_p] == [o.shape for o in out_c]
    assert not torch.allclose(out_p[1], out_c[1])


def test_frozen_stages_and_norm_eval():
    model = ResNet(depth=18, base_channels=8, frozen_stages=1, norm_eval=False)
    model.train()
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert not any(p.requires_grad for p in model.bn1.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training  # norm_eval=False: unfrozen BN trains

    model = ResNet(depth=18, base_channels=8, frozen_stages=-1, norm_eval=True).train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.layer2.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    # norm_eval keeps running stats fixed during a training-mode forward
    before = model.layer4[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, model.layer4[0].bn1.running_mean)


def test_resnet_bad_depth_is_config_error():
    with pytest.raises(ConfigError, match='depth'):
        ResNet(depth=42)


# -- FPN behaviour ---------------------------------------------------------------------------
def test_fpn_odd_sizes_and_extra_levels():
    feats = [torch.randn(1, c, s, s + 2) for c, s in ((8, 25), (16, 13), (32, 7))]
    for extra, num_fpn_convs in ((False, 3), ('on_input', 5), ('on_lateral', 5), ('on_output', 5)):
        neck = FPN([8, 16, 32], 4, num_outs=5, add_extra_convs=extra).eval()
        assert len(neck.lateral_convs) == 3 and len(neck.fpn_convs) == num_fpn_convs
        outs = neck(feats)
        assert [tuple(o.shape[2:]) for o in outs] == [(25, 27), (13, 15), (7, 9), (4, 5), (2, 3)]
    neck = FPN([8, 16, 32], 4, num_outs=5, add_extra_convs=False).eval()
    outs = neck(feats)
    assert torch.equal(outs[3], outs[2][:, :, ::2, ::2])


def test_fpn_true_means_on_input():
    neck = FPN([8, 16, 32], 4, num_outs=4, add_extra_convs=True)
    assert neck.add_extra_convs == 'on_input' and neck.fpn_convs[3].conv.in_channels == 32
    with pytest.raises(ConfigError):
        FPN([8, 16, 32], 4, num_outs=4, add_extra_convs='on_everything')


# -- anchors -----------------------------------------------------------------------------------
def test_retinanet_base_anchors_by_hand():
    gen = MODELS.build(RETINA_ANCHORS)
    assert gen.num_levels == 5 and gen.num_base_priors == [9] * 5
    expected = []
    for ratio in (0.5, 1.0, 2.0):  # ratios outer, scales inner
        for octave in range(3):
            scale = 4 * 2 ** (octave / 3)
            w = 8 * scale / math.sqrt(ratio)
            h = 8 * scale * math.sqrt(ratio)
            expected.append([-w / 2, -h / 2, w / 2, h / 2])
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor(expected), rtol=0, atol=1e-4)
    # the very first anchor: 32x32 scaled by ratio 0.5 -> w = 45.2548, h = 22.6274
    torch.testing.assert_close(
        gen.base_anchors[0][0],
        torch.tensor([-22.6274, -11.3137, 22.6274, 11.3137]),
        atol=1e-4,
        rtol=0,
    )
    torch.testing.assert_close(
        gen.base_anchors[0][4], torch.tensor([-20.1587] * 2 + [20.1587] * 2), atol=1e-4, rtol=0
    )
    assert torch.equal(gen.base_anchors[4], gen.base_anchors[0] * 16)


def test_anchor_counts_and_grid_order_against_brute_force():
    gen = MODELS.build(RETINA_ANCHORS)
    sizes = [(5, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    priors = gen.grid_priors(sizes)
    assert [p.shape[0] for p in priors] == [h * w * 9 for h, w in sizes]
    for level, (h, w) in enumerate(sizes):
        stride = gen.strides[level][0]
        reference = [
            [
                float(b[0] + x * stride),
                float(b[1] + y * stride),
                float(b[2] + x * stride),
                float(b[3] + y * stride),
            ]
            for y in range(h)
            for x in range(w)
            for b in gen.base_anchors[level]
        ]
        assert torch.equal(priors[level], torch.tensor(reference))
    single = gen.single_level_grid_priors((5, 7), 0, dtype=torch.float64)
    assert single.dtype == torch.float64 and torch.allclose(single.float(), priors[0])


def test_anchor_options():
    gen = AnchorGenerator(
        strides=[(16, 8)], ratios=[1.0], scales=[1.0, 2.0], scale_major=False, center_offset=0.5
    )
    torch.testing.assert_close(
        gen.base_anchors[0], torch.tensor([[0.0, 0.0, 8.0, 8.0], [-4.0, -4.0, 12.0, 12.0]])
    )
    priors = gen.single_level_grid_priors((2, 2), 0)
    assert priors[2].tolist() == [16.0, 0.0, 24.0, 8.0]  # x steps by stride_w=16
    assert priors[4].tolist() == [0.0, 8.0, 8.0, 16.0]  # y steps by stride_h=8
    with pytest.raises(ConfigError):
        AnchorGenerator(
            strides=[8], ratios=[1.0], scales=[1.0], octave_base_scale=4, scales_per_octave=3
        )


# -- box coders --------------------------------------------------------------------------------
def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_delta_xywh_round_trip_and_formula():
    g = torch.Generator().manual_seed(0)
    priors, gts = random_boxes(50, g), random_boxes(50, g)
    for coder in (
        DeltaXYWHBBoxCoder(),
        DeltaXYWHBBoxCoder(target_means=(0.1, -0.1, 0.0, 0.2), target_stds=(0.1, 0.1, 0.2, 0.2)),
    ):
        deltas = coder.encode(priors, gts)
        torch.testing.assert_close(coder.decode(priors, deltas, max_shape=None), gts)
    coder = DeltaXYWHBBoxCoder()
    box = coder.decode(
        torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([[0.5, -0.25, math.log(2), 0.0]])
    )
    # centre (20, 40), size (20, 40) -> centre (30, 30), size (40, 40); no +1 anywhere
    torch.testing.assert_close(box, torch.tensor([[10.0, 10.0, 50.0, 50.0]]))


def test_delta_xywh_wh_clamp_and_ctr_clamp():
    coder = DeltaXYWHBBoxCoder(clip_border=False)
    prior = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    limit = abs(math.log(16 / 1000))
    big = coder.decode(prior, torch.tensor([[0.0, 0.0, 100.0, -100.0]]))
    torch.testing.assert_close(big[0, 2] - big[0, 0], 10 * torch.tensor(math.exp(limit)))
    torch.testing.assert_close(big[0, 3] - big[0, 1], 10 * torch.tensor(math.exp(-limit)))
    clamped = DeltaXYWHBBoxCoder(clip_border=False, add_ctr_clamp=True, ctr_clamp=32)
    shifted = clamped.decode(prior, torch.tensor([[100.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(shifted, torch.tensor([[32.0, 0.0, 42.0, 10.0]]))


def test_delta_xywh_clipping_tuple_and_per_image_tensor():
    coder = DeltaXYWHBBoxCoder()
    priors = torch.tensor([[-20.0, -10.0, 40.0, 30.0], [50.0, 60.0, 130.0, 90.0]])
    deltas = torch.zeros(2, 2, 4)  # [B, N, 4] against [N, 4] priors
    tuple_clip = coder.decode(priors, deltas[0], max_shape=(80, 100, 3))
    assert tuple_clip.tolist() == [[0.0, 0.0, 40.0, 30.0], [50.0, 60.0, 100.0, 80.0]]
    per_image = coder.decode(priors, deltas, max_shape=torch.tensor([[80, 100], [40, 120]]))
    assert per_image.shape == (2, 2, 4)
    assert per_image[0].tolist() == tuple_clip.tolist()
    assert per_image[1].tolist() == [[0.0, 0.0, 40.0, 30.0], [50.0, 40.0, 120.0, 40.0]]
    unclipped = coder.decode(priors, deltas, max_shape=None)
    assert torch.equal(unclipped[1], priors)
    # class-specific deltas [N, 4 * C] against [N, 4] RoIs
    per_class = coder.decode(priors, torch.zeros(2, 12), max_shape=(80, 100))
    assert per_class.shape == (2, 12) and per_class[:, 8:].tolist() == tuple_clip.tolist()


def test_distance_point_and_tblr_coders():
    g = torch.Generator().manual_seed(1)
    gts = random_boxes(20, g)
    points = (gts[:, :2] + gts[:, 2:]) / 2 + torch.rand(20, 2, generator=g) - 0.5
    dist = MODELS.build(dict(type='DistancePointBBoxCoder'))
    assert isinstance(dist, DistancePointBBoxCoder)
    torch.testing.assert_close(dist.decode(points, dist.encode(points, gts)), gts)
    box = dist.decode(
        torch.tensor([[10.0, 10.0]]),
        torch.tensor([[20.0, 5.0, 100.0, 3.0]]),
        max_shape=torch.tensor([[50, 60]]),
    )
    assert box.tolist() == [[0.0, 5.0, 60.0, 13.0]]

    tblr = MODELS.build(dict(type='TBLRBBoxCoder', normalizer=4.0))
    assert isinstance(tblr, TBLRBBoxCoder)
    priors = random_boxes(20, g)
    torch.testing.assert_close(tblr.decode(priors, tblr.encode(priors, gts)), gts)
    # prior 0..10 x 0..20 (centre 5, 10): tblr (0.25, 0.5, 0.5, 0.25) * 4 * (h, h, w, w)
    box = tblr.decode(
        torch.tensor([[0.0, 0.0, 10.0, 20.0]]),
        torch.tensor([[0.25, 0.5, 0.5, 0.25]]),
        max_shape=(100, 100),
    )
    assert box.tolist() == [[0.0, 0.0, 15.0, 50.0]]


# -- export ------------------------------------------------------------------------------------
class PriorsAndBoxes(nn.Module):
    """Anchors from a feature map's runtime size, and its deltas decoded and clipped per image."""

    def __init__(self):
        super().__init__()
        self.prior_generator = AnchorGenerator(
            strides=[8], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
        )
        self.coder = DeltaXYWHBBoxCoder()

    def forward(self, bbox_pred: torch.Tensor, img_shape: torch.Tensor):
        priors = self.prior_generator.grid_priors(
            [bbox_pred.shape[-2:]], dtype=bbox_pred.dtype, device=bbox_pred.device
        )[0]
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(bbox_pred.shape[0], -1, 4)
        return priors, self.coder.decode(priors, deltas, max_shape=img_shape)


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'torchscript'])
def test_grid_priors_and_decode_export_with_dynamic_size(dynamo, tmp_path):
    model = PriorsAndBoxes().eval()
    path = str(tmp_path / 'priors.onnx')
    traced_args = (torch.randn(2, 36, 6, 10) * 0.5, torch.tensor([[40.0, 70.0], [48.0, 80.0]]))
    names = dict(input_names=['bbox_pred', 'img_shape'], output_names=['priors', 'boxes'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if dynamo:
            dim = torch.export.Dim
            torch.onnx.export(
                model,
                traced_args,
                path,
                dynamo=True,
                external_data=False,
                dynamic_shapes={
                    'bbox_pred': {0: dim('B', min=2), 2: dim('H', min=2), 3: dim('W', min=2)},
                    'img_shape': {0: dim('B', min=2)},
                },
                verbose=False,
                **names,
            )
        else:
            torch.onnx.export(
                model,
                traced_args,
                path,
                dynamo=False,
                dynamic_axes={'bbox_pred': {0: 'B', 2: 'H', 3: 'W'}, 'img_shape': {0: 'B'}},
                **names,
            )
    graph_input = onnx.load(path).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str)

    # a different batch and size than the traced one, with boxes crossing every border
    bbox_pred = torch.randn(3, 36, 9, 7) * 2
    img_shape = torch.tensor([[50.0, 40.0], [72.0, 56.0], [30.0, 20.0]])
    priors, boxes = ort.InferenceSession(path).run(
        None, {'bbox_pred': bbox_pred.numpy(), 'img_shape': img_shape.numpy()}
    )
    ref_priors, ref_boxes = model(bbox_pred, img_shape)
    assert priors.shape == (9 * 7 * 9, 4)
    torch.testing.assert_close(torch.from_numpy(priors), ref_priors, rtol=0, atol=0)
    torch.testing.assert_close(torch.from_numpy(boxes), ref_boxes, rtol=1e-5, atol=1e-4)
    assert (ref_boxes[2, :, 2] == 20.0).any()  # clipping is exercised
