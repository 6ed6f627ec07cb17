"""The test pipeline's resize / normalise / pad as one op, for graphs that take decoded images.

``deploy::preprocess_image`` turns ``image [B, H, W, 3]`` uint8 BGR (as OpenCV decodes a file)
into the network input the rest of a detector expects, with MMCV's rules:

* keep-ratio resize: ``factor = min(long / max(H, W), short / min(H, W))``, new size
  ``floor(side * factor + 0.5)`` (or exactly ``scale`` without keep-ratio); bilinear with
  half-pixel centres, rounded and clipped to 0..255 as OpenCV's uint8 resize returns;
* optional BGR -> RGB, ``(x - mean) * (1 / std)``;
* bottom/right padding to a multiple of ``size_divisor`` with ``pad_value``.

It returns ``input [B, 3, Hp, Wp]``, ``img_shape [B, 2]`` ``(h, w)`` of the resized image and
``scale [B, 2]`` ``(w_scale, h_scale)``. The size arithmetic runs in float32 in all three
implementations (eager, both ONNX translations), so they agree exactly; against the Python
pipeline (float64 arithmetic, OpenCV's fixed-point bilinear) a pixel value can differ by a few
units, which is the resize difference ``--verify`` reports.
"""

import torch
from torch import Tensor
from torch.nn import functional as F

_OP_NAME = 'deploy::preprocess_image'


def _sizes(height: int, width: int, long: int, short: int, keep_ratio: bool) -> tuple[int, int]:
    """``(new_h, new_w)`` with float32 arithmetic, like the ONNX translations."""
    if not keep_ratio:
        return short, long
    hw = torch.tensor([height, width], dtype=torch.float32)
    factor = torch.minimum(long / hw.max(), short / hw.min())
    new = torch.floor(hw * factor + 0.5)
    return int(new[0]), int(new[1])


@torch.library.custom_op(_OP_NAME, mutates_args=())
def _preprocess_op(
    image: Tensor,
    long: int,
    short: int,
    keep_ratio: bool,
    size_divisor: int,
    pad_value: float,
    mean: list[float],
    std: list[float],
    to_rgb: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    batch, height, width, _ = image.shape
    new_h, new_w = _sizes(height, width, long, short, keep_ratio)
    x = image.permute(0, 3, 1, 2).to(torch.float32)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode='bilinear', align_corners=False)
        x = x.round().clamp(0.0, 255.0)
    if to_rgb:
        x = x.flip(1)
    x = (x - x.new_tensor(mean).view(1, 3, 1, 1)) * (1.0 / x.new_tensor(std).view(1, 3, 1, 1))
    divisor = max(size_divisor, 1)
    pad_h, pad_w = -(-new_h // divisor) * divisor - new_h, -(-new_w // divisor) * divisor - new_w
    x = F.pad(x, (0, pad_w, 0, pad_h), value=pad_value)
    img_shape = x.new_tensor([[new_h, new_w]]).expand(batch, 2).contiguous()
    scale = x.new_tensor([[new_w / width, new_h / height]]).expand(batch, 2).contiguous()
    return x, img_shape, scale


@_preprocess_op.register_fake
def _(image, long, short, keep_ratio, size_divisor, pad_value, mean, std, to_rgb):
    ctx = torch.library.get_ctx()
    batch = image.shape[0]
    height, width = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    out = image.new_empty(batch, 3, height, width, dtype=torch.float32)
    return (
        out,
        image.new_empty(batch, 2, dtype=torch.float32),
        image.new_empty(batch, 2, dtype=torch.float32),
    )


def preprocess_image(
    image: Tensor,
    scale: tuple[int, int],
    keep_ratio: bool,
    size_divisor: int | None,
    pad_value: float,
    mean,
    std,
    to_rgb: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """See the module docstring. ``scale`` is MMCV's ``(long, short)`` edge limits with
    ``keep_ratio``, else the exact ``(w, h)``."""
    # Without keep-ratio, ``long``/``short`` carry the exact (w, h): the new size is (short, long).
    long, short = (max(scale), min(scale)) if keep_ratio else (scale[0], scale[1])
    return _preprocess_op(
        image,
        int(long),
        int(short),
        bool(keep_ratio),
        int(size_divisor or 1),
        float(pad_value),
        [float(v) for v in mean],
        [float(v) for v in std],
        bool(to_rgb),
    )


# --------------------------------------------------------------------------------------------
# ONNX translations (torch.export / onnxscript, and the legacy TorchScript exporter)
# --------------------------------------------------------------------------------------------
def _onnxscript_translation():
    from onnxscript import FLOAT, INT64
    from onnxscript import opset18 as op

    def preprocess_image_onnx(
        image,
        long: int,
        short: int,
        keep_ratio: bool,
        size_divisor: int,
        pad_value: float,
        mean: list[float],
        std: list[float],
        to_rgb: bool,
    ):
        x = op.Cast(op.Transpose(image, perm=[0, 3, 1, 2]), to=FLOAT.dtype)
        shape = op.Shape(image)  # [B, H, W, 3]
        hw = op.Cast(
            op.Slice(shape, op.Constant(value_ints=[1]), op.Constant(value_ints=[3])),
            to=FLOAT.dtype,
        )
        if keep_ratio:
            factor = op.Min(
                op.Div(op.Constant(value_float=float(long)), op.ReduceMax(hw, keepdims=1)),
                op.Div(op.Constant(value_float=float(short)), op.ReduceMin(hw, keepdims=1)),
            )
            new_hw = op.Floor(op.Add(op.Mul(hw, factor), op.Constant(value_float=0.5)))
        else:
            new_hw = op.Constant(value_floats=[float(short), float(long)])
        new_hw_int = op.Cast(new_hw, to=INT64.dtype)
        sizes = op.Concat(
            op.Slice(shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[1])),
            op.Constant(value_ints=[3]),
            new_hw_int,
            axis=0,
        )
        resized = op.Resize(
            x, None, None, sizes, mode='linear', coordinate_transformation_mode='half_pixel'
        )
        x = op.Clip(op.Round(resized), op.Constant(value_float=0.0), op.Constant(value_float=255.0))
        if to_rgb:
            x = op.Gather(x, op.Constant(value_ints=[2, 1, 0]), axis=1)
        mean_t = op.Reshape(op.Constant(value_floats=mean), op.Constant(value_ints=[1, 3, 1, 1]))
        inv_std = op.Div(
            op.Constant(value_float=1.0),
            op.Reshape(op.Constant(value_floats=std), op.Constant(value_ints=[1, 3, 1, 1])),
        )
        x = op.Mul(op.Sub(x, mean_t), inv_std)
        div = op.Constant(value_ints=[size_divisor])
        padded = op.Mul(
            op.Div(op.Add(new_hw_int, op.Sub(div, op.Constant(value_ints=[1]))), div), div
        )
        extra = op.Sub(padded, new_hw_int)  # [pad_h, pad_w]
        zeros = op.Constant(value_ints=[0, 0, 0, 0, 0, 0])
        x = op.Pad(x, op.Concat(zeros, extra, axis=0), op.Constant(value_float=pad_value))
        batch = op.Slice(shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[1]))
        tiles = op.Concat(batch, op.Constant(value_ints=[1]), axis=0)
        img_shape = op.Tile(op.Unsqueeze(new_hw, op.Constant(value_ints=[0])), tiles)
        ratio = op.Div(new_hw, hw)  # (h_scale, w_scale)
        ratio_wh = op.Gather(ratio, op.Constant(value_ints=[1, 0]), axis=0)
        scale = op.Tile(op.Unsqueeze(ratio_wh, op.Constant(value_ints=[0])), tiles)
        return x, img_shape, scale

    return preprocess_image_onnx


def onnx_translation_table() -> dict:
    return {torch.ops.deploy.preprocess_image.default: _onnxscript_translation()}


def _symbolic(g, image, long, short, keep_ratio, size_divisor, pad_value, mean, std, to_rgb):
    from torch.onnx import symbolic_helper as sym

    long = sym._get_const(long, 'i', 'long')
    short = sym._get_const(short, 'i', 'short')
    keep_ratio = bool(sym._get_const(keep_ratio, 'b', 'keep_ratio'))
    size_divisor = sym._get_const(size_divisor, 'i', 'size_divisor')
    pad_value = sym._get_const(pad_value, 'f', 'pad_value')
    mean = sym._get_const(mean, 'fs', 'mean')
    std = sym._get_const(std, 'fs', 'std')
    to_rgb = bool(sym._get_const(to_rgb, 'b', 'to_rgb'))

    def const(value, dtype):
        return g.op('Constant', value_t=torch.tensor(value, dtype=dtype))

    f32 = sym.cast_pytorch_to_onnx['Float']
    i64 = sym.cast_pytorch_to_onnx['Long']
    x = g.op('Cast', g.op('Transpose', image, perm_i=[0, 3, 1, 2]), to_i=f32)
    shape = g.op('Shape', image)
    hw = g.op(
        'Cast', g.op('Slice', shape, const([1], torch.long), const([3], torch.long)), to_i=f32
    )
    if keep_ratio:
        factor = g.op(
            'Min',
            g.op('Div', const(float(long), torch.float), g.op('ReduceMax', hw, keepdims_i=1)),
            g.op('Div', const(float(short), torch.float), g.op('ReduceMin', hw, keepdims_i=1)),
        )
        new_hw = g.op('Floor', g.op('Add', g.op('Mul', hw, factor), const(0.5, torch.float)))
    else:
        new_hw = const([float(short), float(long)], torch.float)
    new_hw_int = g.op('Cast', new_hw, to_i=i64)
    batch = g.op('Slice', shape, const([0], torch.long), const([1], torch.long))
    sizes = g.op('Concat', batch, const([3], torch.long), new_hw_int, axis_i=0)
    empty = g.op('Constant', value_t=torch.tensor([], dtype=torch.float))
    resized = g.op(
        'Resize',
        x,
        empty,
        empty,
        sizes,
        mode_s='linear',
        coordinate_transformation_mode_s='half_pixel',
    )
    x = g.op('Clip', g.op('Round', resized), const(0.0, torch.float), const(255.0, torch.float))
    if to_rgb:
        x = g.op('Gather', x, const([2, 1, 0], torch.long), axis_i=1)
    mean_t = const([[[[v]] for v in mean]], torch.float)
    inv_std = const([[[[1.0 / v]] for v in std]], torch.float)
    x = g.op('Mul', g.op('Sub', x, mean_t), inv_std)
    div = const([size_divisor], torch.long)
    padded = g.op(
        'Mul',
        g.op('Div', g.op('Add', new_hw_int, const([size_divisor - 1], torch.long)), div),
        div,
    )
    extra = g.op('Sub', padded, new_hw_int)
    pads = g.op('Concat', const([0, 0, 0, 0, 0, 0], torch.long), extra, axis_i=0)
    x = g.op('Pad', x, pads, const(pad_value, torch.float))
    tiles = g.op('Concat', batch, const([1], torch.long), axis_i=0)
    img_shape = g.op('Tile', g.op('Unsqueeze', new_hw, const([0], torch.long)), tiles)
    ratio_wh = g.op('Gather', g.op('Div', new_hw, hw), const([1, 0], torch.long), axis_i=0)
    scale = g.op('Tile', g.op('Unsqueeze', ratio_wh, const([0], torch.long)), tiles)
    return x, img_shape, scale


def register_legacy_symbolic(opset_version: int) -> None:
    torch.onnx.register_custom_op_symbolic(_OP_NAME, _symbolic, opset_version)
