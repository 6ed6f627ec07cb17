"""Bilinear sampling of feature maps at points (MMCV's ``point_sample`` family, used by PointRend).

Points are given in *relative* coordinates, ``(x, y)`` in ``[0, 1] x [0, 1]``, either relative to
a whole feature map ("image points") or to an RoI ("RoI points"). A point's feature is read with
``grid_sample`` (bilinear, zero outside the map), so ``(0, 0)`` is the map's top-left *corner*
with ``align_corners=False`` (MMCV's default), not the centre of its first pixel.

Every function is plain traceable PyTorch: ``grid_sample`` exports to ONNX ``GridSample``
(opset >= 16) in both exporters, and the only sizes read are the feature map's own (dynamic).
The arithmetic follows MMCV's operation order (``p * (x2 - x1) + x1``, then ``/ size * scale``,
then ``* 2 - 1``), so eager results equal MMCV's bit for bit.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from .traced_shape import traced_shape


def point_sample(features: Tensor, points: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinear features at relative image points.

    Args:
        features: ``[N, C, H, W]``.
        points: ``[N, P, 2]`` or ``[N, Hg, Wg, 2]`` ``(x, y)`` in ``[0, 1]`` of each map.
        align_corners: ``grid_sample``'s flag (False: 0 and 1 are the map's outer corners).

    Returns:
        ``[N, C, P]`` or ``[N, C, Hg, Wg]``.
    """
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points
    out = F.grid_sample(features, grid * 2.0 - 1.0, mode='bilinear', align_corners=align_corners)
    return out.squeeze(3) if flat else out


def regular_grid_points(size: tuple[int, int]) -> Tensor:
    """The centres of an ``h x w`` grid of cells over the unit square: ``[1, h * w, 2]`` ``(x, y)``,
    row-major (MMCV's ``generate_grid``, made with ``affine_grid`` like it for identical floats)."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(identity, [1, 1, *size], align_corners=False)
    return ((grid + 1.0) / 2.0).reshape(1, -1, 2)


def feature_size_wh(features: Tensor) -> Tensor:
    """``[2]`` float ``(W, H)`` of ``features [N, C, H, W]``; dynamic in both exporters (the
    TorchScript tracer needs the explicit shape op, torch.export reads the symbolic sizes)."""
    shape = traced_shape(features)
    if shape is not None:
        return shape[2:].flip(0).to(torch.float32)
    height, width = features.shape[2:]
    return torch.tensor([width, height], dtype=torch.float32, device=features.device)


def roi_points_to_image_points(
    rois: Tensor, roi_points: Tensor, features: Tensor, spatial_scale: float
) -> Tensor:
    """RoI-relative points -> image-relative points of ``features`` (MMCV's
    ``rel_roi_point_to_rel_img_point``).

    Args:
        rois: ``[N, 5]`` ``(batch_index, x1, y1, x2, y2)`` in input pixels (or ``[N, 4]``).
        roi_points: ``[N, P, 2]`` (or ``[1, P, 2]``, the same points for every RoI) ``(x, y)`` in
            ``[0, 1]`` of each RoI.
        features: the map the points will be sampled from (only its size is read).
        spatial_scale: ``1 / stride`` of that map.

    Returns:
        ``[N, P, 2]`` ``(x, y)`` in ``[0, 1]`` of the map.
    """
    x1, y1, x2, y2 = (rois[:, i, None] for i in range(-4, 0))
    xs = roi_points[..., 0] * (x2 - x1) + x1
    ys = roi_points[..., 1] * (y2 - y1) + y1
    return torch.stack([xs, ys], dim=2) / feature_size_wh(features) * spatial_scale


def uncertain_point_coords(
    point_indices: Tensor, height: int, width: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Flat indices into an ``height x width`` grid -> the cells' centres ``[N, k, 2]`` ``(x, y)``
    in ``[0, 1]`` (MMDetection's ``get_roi_rel_points_test``)."""
    h_step = 1.0 / height
    w_step = 1.0 / width
    xs = w_step / 2.0 + (point_indices % width).to(dtype) * w_step
    ys = h_step / 2.0 + torch.div(point_indices, width, rounding_mode='floor').to(dtype) * h_step
    return torch.stack([xs, ys], dim=2)
