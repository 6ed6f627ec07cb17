"""The test pipeline's resize / normalise / pad as one op, for graphs that take decoded images.

``deploy::preprocess_image`` turns ``image [B, H, W, 3]`` uint8 BGR (as OpenCV decodes a file)
into the network input the rest of a detector expects, with MMCV's rules, **bit for bit**:

* keep-ratio size: ``factor = min(long / max(H, W), short / min(H, W))``, new side
  ``floor(side * factor + 0.5)``, computed with exact integer arithmetic (MMCV's float64 agrees
  but in a few sizes in 100 000 where it rounds an exact .5 the other way); without keep-ratio
  exactly ``scale``;
* bilinear resize exactly as OpenCV's ``cv2.resize(..., INTER_LINEAR)`` computes it for uint8:
  source coordinates ``(d + 0.5) * S / D - 0.5`` rounded to float32, weights quantised to
  1/2048, an integer horizontal pass, and OpenCV's fixed-point vertical pass
  ``((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2``. The coordinate is
  ``float32((2d + 1) S - D) / float32(2 D)``: both integers are exact in float32 up to images
  of about 4000 px, and float32 division rounds correctly, so the result is OpenCV's float (which
  it computes in float64 and rounds) without float64 arithmetic, which TensorRT lacks;
* optional BGR -> RGB, ``(x - mean) * (1 / std)``;
* bottom/right padding to a multiple of ``size_divisor`` with ``pad_value``.

It returns ``input [B, 3, Hp, Wp]``, ``img_shape [B, 2]`` ``(h, w)`` of the resized image and
``scale [B, 2]`` ``(w_scale, h_scale)``. Eager and both ONNX translations use the same integer and
float32 steps, so they agree exactly, and they agree with the Python pipeline (OpenCV) exactly.
"""

import torch
from torch import Tensor
from torch.nn import functional as F

_OP_NAME = 'deploy::preprocess_image'
#: OpenCV's INTER_RESIZE_COEF_SCALE: interpolation weights are multiples of 1/2048
_ONE = 2048


def _keep_ratio_size(height: int, width: int, long: int, short: int) -> tuple[int, int]:
    """``(new_h, new_w)``: MMCV's keep-ratio rule in exact integer arithmetic."""
    # factor = min(long / max(h, w), short / min(h, w)) as the fraction num / den
    num, den = long, max(height, width)
    if short * den < num * min(height, width):
        num, den = short, min(height, width)
    return (2 * height * num + den) // (2 * den), (2 * width * num + den) // (2 * den)


def _axis(src: int, dst: int, clamp: bool, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and weights of one axis, as OpenCV's ``resize`` computes them."""
    d = torch.arange(dst, device=device, dtype=torch.int64)
    f = ((2 * d + 1) * src - dst).to(torch.float32) / torch.tensor(2.0 * dst, device=device)
    s = torch.floor(f)
    f = f - s
    s = s.to(torch.int64)
    if clamp:  # OpenCV clamps the coordinate in x; in y it only clamps the row it reads
        low, high = s < 0, s >= src - 1
        f = torch.where(low | high, 0.0, f)
        s = torch.where(low, 0, torch.where(high, src - 1, s))
    w0 = torch.round((1.0 - f) * _ONE).to(torch.int32)
    w1 = torch.round(f * _ONE).to(torch.int32)
    return s.clamp(0, src - 1), (s + 1).clamp(0, src - 1), w0, w1


def resize_like_opencv(image: Tensor, new_h: int, new_w: int) -> Tensor:
    """``[B, H, W, C]`` uint8 -> ``[B, new_h, new_w, C]`` uint8, as ``cv2.INTER_LINEAR``."""
    _, height, width, _ = image.shape
    if (new_h, new_w) == (height, width):
        return image
    x0, x1, a0, a1 = _axis(width, new_w, True, image.device)
    y0, y1, b0, b1 = _axis(height, new_h, False, image.device)
    src = image.to(torch.int32)
    rows = src[:, :, x0] * a0.view(1, 1, -1, 1) + src[:, :, x1] * a1.view(1, 1, -1, 1)
    top = torch.div(
        torch.div(rows[:, y0], 16, rounding_mode='floor') * b0.view(1, -1, 1, 1),
        65536,
        rounding_mode='floor',
    )
    bottom = torch.div(
        torch.div(rows[:, y1], 16, rounding_mode='floor') * b1.view(1, -1, 1, 1),
        65536,
        rounding_mode='floor',
    )
    return torch.div(top + bottom + 2, 4, rounding_mode='floor').clamp(0, 255).to(torch.uint8)


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
    if keep_ratio:
        new_h, new_w = _keep_ratio_size(height, width, long, short)
    else:
        new_h, new_w = short, long
    x = resize_like_opencv(image, new_h, new_w).permute(0, 3, 1, 2).to(torch.float32)
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
# ONNX translations. Both write the same graph with a small builder, so the two exporters cannot
# drift apart: ``ops`` is onnxscript's opset module or an adapter around the legacy ``g.op``.
# --------------------------------------------------------------------------------------------
def _graph(ops, image, long, short, keep_ratio, size_divisor, pad_value, mean, std, to_rgb):
    """The op with ONNX operators. ``ops`` offers ``call(name, *inputs, **attrs)``,
    ``ints(values)``, ``floats(values)``, ``float(value)``, ``int(value)`` and the type codes
    ``F32``, ``I32``, ``I64``."""
    call, ints = ops.call, ops.ints
    shape = call('Shape', image)  # [B, H, W, 3]
    batch = call('Slice', shape, ints([0]), ints([1]))
    height = call('Slice', shape, ints([1]), ints([2]))
    width = call('Slice', shape, ints([2]), ints([3]))
    if keep_ratio:
        # factor = num / den = min(long / max(h, w), short / min(h, w)), exactly in int64
        big, small = call('Max', height, width), call('Min', height, width)
        first = call(
            'LessOrEqual', call('Mul', ints([long]), small), call('Mul', ints([short]), big)
        )
        num = call('Where', first, ints([long]), ints([short]))
        den = call('Where', first, big, small)

        def new_side(side):
            twice = call('Mul', ints([2]), call('Mul', side, num))
            return call('Div', call('Add', twice, den), call('Mul', ints([2]), den))

        new_h, new_w = new_side(height), new_side(width)
    else:
        new_h, new_w = ints([short]), ints([long])

    def axis(src, dst, clamp):
        d = call('Range', ints(0), call('Squeeze', dst), ints(1))  # [D] int64
        numer = call(
            'Sub', call('Mul', call('Add', call('Mul', d, ints([2])), ints([1])), src), dst
        )
        f = call(
            'Div',
            call('Cast', numer, to=ops.F32),
            call('Cast', call('Mul', dst, ints([2])), to=ops.F32),
        )
        s = call('Floor', f)
        f = call('Sub', f, s)
        s = call('Cast', s, to=ops.I64)
        last = call('Sub', src, ints([1]))
        if clamp:
            low = call('Less', s, ints([0]))
            high = call('GreaterOrEqual', s, last)
            f = call('Where', call('Or', low, high), ops.float(0.0), f)
            s = call('Where', low, ints([0]), call('Where', high, last, s))
        one = ops.float(float(_ONE))
        w0 = call(
            'Cast', call('Round', call('Mul', call('Sub', ops.float(1.0), f), one)), to=ops.I32
        )
        w1 = call('Cast', call('Round', call('Mul', f, one)), to=ops.I32)
        i0 = call('Clip', s, ints(0), call('Squeeze', last))
        i1 = call('Clip', call('Add', s, ints([1])), ints(0), call('Squeeze', last))
        return i0, i1, w0, w1

    x0, x1, a0, a1 = axis(width, new_w, True)
    y0, y1, b0, b1 = axis(height, new_h, False)
    src = call('Cast', image, to=ops.I32)
    a0 = call('Reshape', a0, ints([1, 1, -1, 1]))
    a1 = call('Reshape', a1, ints([1, 1, -1, 1]))
    rows = call(
        'Add',
        call('Mul', call('Gather', src, x0, axis=2), a0),
        call('Mul', call('Gather', src, x1, axis=2), a1),
    )
    b0 = call('Reshape', b0, ints([1, -1, 1, 1]))
    b1 = call('Reshape', b1, ints([1, -1, 1, 1]))
    i16, i65536, i4 = ops.int32(16), ops.int32(65536), ops.int32(4)
    top = call('Div', call('Mul', call('Div', call('Gather', rows, y0, axis=1), i16), b0), i65536)
    bottom = call(
        'Div', call('Mul', call('Div', call('Gather', rows, y1, axis=1), i16), b1), i65536
    )
    resized = call('Div', call('Add', call('Add', top, bottom), ops.int32(2)), i4)
    resized = call('Clip', resized, ops.int32(0), ops.int32(255))
    x = call('Cast', call('Transpose', resized, perm=[0, 3, 1, 2]), to=ops.F32)
    if to_rgb:
        x = call('Gather', x, ints([2, 1, 0]), axis=1)
    mean_t = call('Reshape', ops.floats(mean), ints([1, 3, 1, 1]))
    inv_std = call('Reshape', ops.floats([1.0 / v for v in std]), ints([1, 3, 1, 1]))
    x = call('Mul', call('Sub', x, mean_t), inv_std)
    new_hw = call('Concat', new_h, new_w, axis=0)
    div = ints([size_divisor])
    padded = call('Mul', call('Div', call('Add', new_hw, ints([size_divisor - 1])), div), div)
    pads = call('Concat', ints([0, 0, 0, 0, 0, 0]), call('Sub', padded, new_hw), axis=0)
    x = call('Pad', x, pads, ops.float(pad_value))
    new_hw_f = call('Cast', new_hw, to=ops.F32)
    tiles = call('Concat', batch, ints([1]), axis=0)
    img_shape = call('Tile', call('Unsqueeze', new_hw_f, ints([0])), tiles)
    hw = call('Cast', call('Concat', height, width, axis=0), to=ops.F32)
    ratio_wh = call('Gather', call('Div', new_hw_f, hw), ints([1, 0]), axis=0)
    scale = call('Tile', call('Unsqueeze', ratio_wh, ints([0])), tiles)
    return x, img_shape, scale


class _OnnxscriptOps:
    """``_graph``'s builder interface over onnxscript (the torch.export-based exporter)."""

    def __init__(self):
        from onnxscript import FLOAT, INT32, INT64, opset18

        self.op = opset18
        self.F32, self.I32, self.I64 = FLOAT.dtype, INT32.dtype, INT64.dtype

    def call(self, name, *inputs, **attrs):
        return getattr(self.op, name)(*inputs, **attrs)

    def ints(self, values):
        if isinstance(values, int):
            return self.op.Constant(value_int=values)
        return self.op.Constant(value_ints=list(values))

    def floats(self, values):
        return self.op.Constant(value_floats=[float(v) for v in values])

    def float(self, value):
        return self.op.Constant(value_float=float(value))

    def int32(self, value):
        return self.op.Cast(self.op.Constant(value_int=int(value)), to=self.I32)


class _LegacyOps:
    """``_graph``'s builder interface over the TorchScript exporter's ``g.op``."""

    def __init__(self, g):
        from torch.onnx import symbolic_helper as sym

        self.g = g
        self.F32 = sym.cast_pytorch_to_onnx['Float']
        self.I32 = sym.cast_pytorch_to_onnx['Int']
        self.I64 = sym.cast_pytorch_to_onnx['Long']

    def call(self, name, *inputs, **attrs):
        suffix = {int: '_i', float: '_f', str: '_s', list: '_i'}
        named = {}
        for key, value in attrs.items():
            named[key + ('_i' if key == 'to' else suffix[type(value)])] = value
        return self.g.op(name, *inputs, **named)

    def _const(self, value, dtype):
        return self.g.op('Constant', value_t=torch.tensor(value, dtype=dtype))

    def ints(self, values):
        return self._const(values, torch.int64)

    def floats(self, values):
        return self._const([float(v) for v in values], torch.float32)

    def float(self, value):
        return self._const(float(value), torch.float32)

    def int32(self, value):
        return self._const(int(value), torch.int32)


def _onnxscript_translation():
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
        return _graph(
            _OnnxscriptOps(),
            image,
            long,
            short,
            keep_ratio,
            size_divisor,
            pad_value,
            mean,
            std,
            to_rgb,
        )

    return preprocess_image_onnx


def onnx_translation_table() -> dict:
    return {torch.ops.deploy.preprocess_image.default: _onnxscript_translation()}


def _symbolic(g, image, long, short, keep_ratio, size_divisor, pad_value, mean, std, to_rgb):
    from torch.onnx import symbolic_helper as sym

    return _graph(
        _LegacyOps(g),
        image,
        sym._get_const(long, 'i', 'long'),
        sym._get_const(short, 'i', 'short'),
        bool(sym._get_const(keep_ratio, 'b', 'keep_ratio')),
        sym._get_const(size_divisor, 'i', 'size_divisor'),
        sym._get_const(pad_value, 'f', 'pad_value'),
        sym._get_const(mean, 'fs', 'mean'),
        sym._get_const(std, 'fs', 'std'),
        bool(sym._get_const(to_rgb, 'b', 'to_rgb')),
    )


def register_legacy_symbolic(opset_version: int) -> None:
    torch.onnx.register_custom_op_symbolic(_OP_NAME, _symbolic, opset_version)
