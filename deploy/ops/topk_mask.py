"""The best ``k`` entries of each row as a mask, without ``TopK``: for ``k`` beyond TensorRT's
TopK limit (RTMDet's ``nms_pre=30000`` per level).

The k-th largest value is found by bisection on the values (``Greater``, ``ReduceSum``, ``Where``
only, a fixed number of unrolled steps), then every entry above it is kept, and of the entries
equal to it the first ones by index (a stable descending sort's order) up to ``k``.
"""

import torch
from torch import Tensor

#: bisection steps: exact (adjacent float32 bounds) for a k-th value >= 2**-40 in (0, 1]
BISECTION_STEPS = 64


def top_k_mask(scores: Tensor, k: int, steps: int = BISECTION_STEPS) -> Tensor:
    """Mask ``[B, M]`` of the ``k`` largest positive entries of each row of ``scores [B, M]``.

    Entries ``<= 0`` are never kept (they mark non-candidates); a row with fewer than ``k``
    positive entries keeps all of them. Values must lie in ``[0, 1]`` (scores).
    """
    lo = scores.new_zeros(scores.shape[0], 1)  # count(scores > lo) >= k, or lo = 0
    hi = scores.new_ones(scores.shape[0], 1)  # count(scores > hi) < k
    for _ in range(steps):
        mid = (lo + hi) * 0.5
        enough = (scores > mid).sum(1, keepdim=True) >= k
        lo = torch.where(enough, mid, lo)
        hi = torch.where(enough, hi, mid)
    above = scores > hi
    # hi is now the k-th largest value (no float lies between lo and hi): take its first ties
    ties = scores == hi
    room = k - above.sum(1, keepdim=True)
    tie_rank = torch.cumsum(ties.to(torch.int64), 1)
    return above | (ties & (tie_rank <= room))
