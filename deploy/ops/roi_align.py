"""RoIAlign (MMCV / Detectron2 semantics): eager PyTorch, standard ONNX ``RoiAlign`` in a graph.

``roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)`` pools every RoI
``[batch_index, x1, y1, x2, y2]`` (input-image pixels) into a fixed ``output_size`` grid of one
feature map, averaging ``sampling_ratio x sampling_ratio`` bilinear samples per bin (0: adaptive,
``ceil(roi_size / output_size)`` per RoI and axis). With ``aligned=True`` pixel centres sit at
``+0.5`` (the RoI is shifted by -0.5 feature pixels); with ``aligned=False`` RoIs are at least one
feature pixel wide and high (the original Mask R-CNN behaviour). A sample more than one pixel
outside the map contributes 0; samples in ``[-1, 0]`` are clamped to the border.

ONNX opset 16 added ``coordinate_transformation_mode`` to ``RoiAlign``: ``half_pixel`` is exactly
``aligned=True`` and ``output_half_pixel`` exactly ``aligned=False`` (sub-pixel RoIs included), so
no RoI shifting tricks and no custom domain are needed. Lower opsets are refused.

The adaptive grid size depends on each RoI's size, so the eager body is not traceable; it lives
in the custom op ``deploy::roi_align`` (opaque to tracing):

* the TorchScript exporter translates the custom op with a symbolic function (registered here,
  at import, for every opset);
* the torch.export-based exporter gets the ``RoiAlign`` node directly from
  ``torch.onnx.ops.symbolic`` (no translation table needed).
"""

import torch
from torch import Tensor

from ..errors import ExportError

_OP_NAME = 'deploy::roi_align'
#: the first ONNX opset whose RoiAlign has coordinate_transformation_mode
ROI_ALIGN_MIN_OPSET = 16
#: elements of the gathered sample tensor per chunk of RoIs in eager mode (bounds memory)
_CHUNK_ELEMENTS = 1 << 22


def check_opset(opset_version: int) -> None:
    """Raise :class:`ExportError` when ``opset_version`` cannot express RoIAlign exactly."""
    if opset_version < ROI_ALIGN_MIN_OPSET:
        raise ExportError(
            f'RoIAlign needs ONNX opset >= {ROI_ALIGN_MIN_OPSET} (RoiAlign '
            f'coordinate_transformation_mode); opset {opset_version} would shift sub-pixel RoIs '
            'by up to one pixel: export with --opset-version 16 or later'
        )


# --------------------------------------------------------------------------------------------
# Eager implementation
# --------------------------------------------------------------------------------------------
def _roi_geometry(
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
):
    """Per-RoI start, bin size and sample grid (float32, in the order ONNX Runtime computes)."""
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:5].float()
    start_x = boxes[:, 0] * spatial_scale - offset
    start_y = boxes[:, 1] * spatial_scale - offset
    roi_w = boxes[:, 2] * spatial_scale - offset - start_x
    roi_h = boxes[:, 3] * spatial_scale - offset - start_y
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    if sampling_ratio > 0:
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
    else:
        grid_w = torch.ceil(roi_w / out_w).long()
        grid_h = torch.ceil(roi_h / out_h).long()
    return start_x, start_y, bin_w, bin_h, grid_w, grid_h


def _axis_samples(start: Tensor, bin_size: Tensor, grid: int, out: int, length: int):
    """Sample positions along one axis -> the two neighbour indices and their weights.

    Args:
        start, bin_size: ``[k]`` float32.
        grid: samples per bin (the same for the k RoIs).
        out: bins along the axis.
        length: feature map size along the axis.

    Returns:
        ``low, high [k, out * grid]`` int64 and ``w_low, w_high [k, out * grid]`` float32 (zero for
        samples outside ``[-1, length]``).
    """
    bins = torch.arange(out, dtype=torch.float32, device=start.device)
    steps = torch.arange(grid, dtype=torch.float32, device=start.device) + 0.5
    # start + bin * bin_size + (i + .5) * bin_size / grid, in this float order (as the kernels)
    pos = (
        start[:, None, None]
        + bins[None, :, None] * bin_size[:, None, None]
        + steps[None, None, :] * bin_size[:, None, None] / grid
    )
    pos = pos.reshape(len(start), out * grid)
    inside = (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0.0)
    low = pos.long()  # truncation == floor for pos >= 0
    at_end = low >= length - 1
    low = torch.where(at_end, length - 1, low)
    high = torch.where(at_end, low, low + 1)
    pos = torch.where(at_end, low.float(), pos)
    frac = pos - low.float()
    w_low = torch.where(inside, 1.0 - frac, 0.0)
    w_high = torch.where(inside, frac, 0.0)
    return low, high, w_low, w_high


def _roi_align_group(
    table: Tensor,
    height: int,
    width: int,
    batch_idx: Tensor,
    start_x: Tensor,
    start_y: Tensor,
    bin_w: Tensor,
    bin_h: Tensor,
    grid_h: int,
    grid_w: int,
    output_size: tuple[int, int],
) -> Tensor:
    """RoIAlign of k RoIs that share one sample grid -> ``[k, C, out_h, out_w]``.

    ``table`` is the feature map as ``[B * H * W, C]`` rows (one gather per sample corner).
    """
    out_h, out_w = output_size
    k = len(batch_idx)
    y_lo, y_hi, wy_lo, wy_hi = _axis_samples(start_y, bin_h, grid_h, out_h, height)
    x_lo, x_hi, wx_lo, wx_hi = _axis_samples(start_x, bin_w, grid_w, out_w, width)
    base = (batch_idx * (height * width))[:, None, None]
    acc = None
    for ys, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xs, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            idx = base + ys[:, :, None] * width + xs[:, None, :]  # [k, SY, SX]
            weight = wy[:, :, None] * wx[:, None, :]
            term = table[idx] * weight[..., None]  # [k, SY, SX, C]
            acc = term if acc is None else acc + term
    count = max(grid_h * grid_w, 1)
    pooled = acc.reshape(k, out_h, grid_h, out_w, grid_w, -1).sum(dim=(2, 4)) / count
    return pooled.permute(0, 3, 1, 2)


def roi_align_eager(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """Eager RoIAlign (see the module docstring); RoIs that share a sample grid are vectorised."""
    num_rois = rois.shape[0]
    batch, channels, height, width = features.shape
    out = features.new_zeros(num_rois, channels, *output_size)
    if num_rois == 0 or height == 0 or width == 0:
        return out
    table = features.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    start_x, start_y, bin_w, bin_h, grid_w, grid_h = _roi_geometry(
        rois, output_size, spatial_scale, sampling_ratio, aligned
    )
    batch_idx = rois[:, 0].long()
    grids = torch.stack([grid_h, grid_w], 1)
    for gh, gw in torch.unique(grids, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # an empty RoI (aligned): no samples, output 0
        members = torch.nonzero((grid_h == gh) & (grid_w == gw)).flatten()
        per_roi = output_size[0] * gh * output_size[1] * gw * channels
        for chunk in members.split(max(1, _CHUNK_ELEMENTS // per_roi)):
            out[chunk] = _roi_align_group(
                table,
                height,
                width,
                batch_idx[chunk],
                start_x[chunk],
                start_y[chunk],
                bin_w[chunk],
                bin_h[chunk],
                gh,
                gw,
                output_size,
            ).to(out.dtype)
    return out


# --------------------------------------------------------------------------------------------
# The custom op (opaque to tracing) and its public wrapper
# --------------------------------------------------------------------------------------------
@torch.library.custom_op(_OP_NAME, mutates_args=())
def _roi_align_op(
    features: Tensor,
    rois: Tensor,
    output_height: int,
    output_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    return roi_align_eager(
        features, rois, (output_height, output_width), spatial_scale, sampling_ratio, aligned
    )


@_roi_align_op.register_fake
def _(features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned):
    return features.new_empty(rois.shape[0], features.shape[1], output_height, output_width)


def _is_dynamo_onnx_export() -> bool:
    return torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing()


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Pool each RoI of ``rois`` from ``features`` into a fixed grid.

    Args:
        features: ``[B, C, H, W]`` float32 feature map.
        rois: ``[K, 5]`` float32 rows ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        output_size: ``out_h`` (square) or ``(out_h, out_w)``.
        spatial_scale: feature pixels per input pixel (``1 / stride``).
        sampling_ratio: samples per bin and axis; ``0`` (adaptive) uses ``ceil(roi / out)``.
        aligned: half-pixel alignment (MMDetection's default ``True``).

    Returns:
        ``[K, C, out_h, out_w]`` float32.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if _is_dynamo_onnx_export():
        return torch.onnx.ops.symbolic(
            'RoiAlign',
            (features, rois[:, 1:5], rois[:, 0].long()),
            dict(
                mode='avg',
                output_height=int(out_h),
                output_width=int(out_w),
                sampling_ratio=int(max(sampling_ratio, 0)),
                spatial_scale=float(spatial_scale),
                coordinate_transformation_mode='half_pixel' if aligned else 'output_half_pixel',
            ),
            dtype=features.dtype,
            shape=(rois.shape[0], features.shape[1], out_h, out_w),
            version=ROI_ALIGN_MIN_OPSET,
        )
    return _roi_align_op(
        features,
        rois,
        int(out_h),
        int(out_w),
        float(spatial_scale),
        int(sampling_ratio),
        bool(aligned),
    )


# --------------------------------------------------------------------------------------------
# ONNX translation for the legacy TorchScript exporter (symbolic function)
# --------------------------------------------------------------------------------------------
def _symbolic(
    g, features, rois, output_height, output_width, spatial_scale, sampling_ratio, aligned
):
    from torch.onnx import symbolic_helper as sym

    check_opset(g.opset)
    out_h = sym._get_const(output_height, 'i', 'output_height')
    out_w = sym._get_const(output_width, 'i', 'output_width')
    scale = sym._get_const(spatial_scale, 'f', 'spatial_scale')
    ratio = sym._get_const(sampling_ratio, 'i', 'sampling_ratio')
    is_aligned = sym._get_const(aligned, 'b', 'aligned')

    def const(value):
        return g.op('Constant', value_t=torch.tensor(value, dtype=torch.long))

    boxes = g.op('Slice', rois, const([1]), const([5]), const([1]))
    batch_idx = g.op('Slice', rois, const([0]), const([1]), const([1]))
    batch_idx = g.op(
        'Cast', g.op('Squeeze', batch_idx, const([1])), to_i=sym.cast_pytorch_to_onnx['Long']
    )
    return g.op(
        'RoiAlign',
        features,
        boxes,
        batch_idx,
        mode_s='avg',
        output_height_i=out_h,
        output_width_i=out_w,
        sampling_ratio_i=max(int(ratio), 0),
        spatial_scale_f=scale,
        coordinate_transformation_mode_s='half_pixel' if is_aligned else 'output_half_pixel',
    )


def register_legacy_symbolic() -> None:
    """Register the TorchScript-exporter symbolic of ``deploy::roi_align`` (for every opset; the
    symbolic itself refuses opsets below :data:`ROI_ALIGN_MIN_OPSET`)."""
    torch.onnx.register_custom_op_symbolic(_OP_NAME, _symbolic, 9)


register_legacy_symbolic()
