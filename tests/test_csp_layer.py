"""MMDetection's CSP layer and blocks: checkpoint names, residual rules, attention, export ops."""

import io

import onnx
import pytest
import torch

from deploy.models.layers.csp_layer import (
    ChannelAttention,
    CSPLayer,
    CSPNeXtBlock,
    DarknetBottleneck,
    SPPBottleneck,
)

BN = dict(type='BN', eps=1e-5)


def test_cspnext_layer_keys_match_rtmdet_tiny_stage1():
    layer = CSPLayer(
        48,
        48,
        num_blocks=1,
        use_cspnext_block=True,
        channel_attention=True,
        norm_cfg=BN,
        act_cfg=dict(type='SiLU'),
    )
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes['main_conv.conv.weight'] == (24, 48, 1, 1)
    assert shapes['final_conv.conv.weight'] == (48, 48, 1, 1)
    assert shapes['blocks.0.conv1.conv.weight'] == (24, 24, 3, 3)
    assert shapes['blocks.0.conv2.depthwise_conv.conv.weight'] == (24, 1, 5, 5)
    assert shapes['blocks.0.conv2.pointwise_conv.bn.running_var'] == (24,)
    assert shapes['attention.fc.weight'] == (48, 48, 1, 1) and shapes['attention.fc.bias'] == (48,)
    assert len(shapes) == 6 * 6 + 2  # 6 ConvModules (conv + 5 BN entries), fc


def test_darknet_layer_keys_and_bn_defaults():
    layer = CSPLayer(48, 48, num_blocks=2)
    assert not hasattr(layer, 'attention')
    names = list(layer.state_dict())
    assert 'blocks.1.conv1.conv.weight' in names and 'blocks.1.conv2.bn.weight' in names
    assert layer.main_conv.bn.eps == 1e-3 and layer.main_conv.bn.momentum == 0.03
    assert layer.blocks[0].conv1.conv.kernel_size == (1, 1)
    assert layer.blocks[0].conv2.conv.kernel_size == (3, 3)


@pytest.mark.parametrize('block_cls', [DarknetBottleneck, CSPNeXtBlock])
def test_identity_only_when_asked_and_shapes_match(block_cls):
    x = torch.randn(1, 8, 6, 6)
    with_id = block_cls(8, 8, 1.0, add_identity=True).eval()
    without = block_cls(8, 8, 1.0, add_identity=False).eval()
    without.load_state_dict(with_id.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(with_id(x), without(x) + x)
    assert not block_cls(8, 16, 1.0, add_identity=True).add_identity


def test_channel_attention_is_hard_sigmoid_gate():
    att = ChannelAttention(4).eval()
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        gate = att.fc(x.mean(dim=(2, 3), keepdim=True))
        expected = x * ((gate + 3) / 6).clamp(0, 1)
        torch.testing.assert_close(att(x), expected)


def test_csp_layers_export_standard_ops():
    model = torch.nn.Sequential(
        CSPLayer(16, 16, use_cspnext_block=True, channel_attention=True), SPPBottleneck(16, 16)
    ).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 16, 8, 8), buf, dynamo=False, opset_version=17)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert {'Conv', 'MaxPool', 'HardSigmoid', 'ReduceMean'} <= ops
    assert all(
        n.domain in ('', 'ai.onnx') for n in onnx.load_from_string(buf.getvalue()).graph.node
    )
