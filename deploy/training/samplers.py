"""Samplers (MMDetection's ``PseudoSampler`` and ``RandomSampler``): which assigned candidates
take part in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .assigners import AssignResult
from .settings import SamplerSettings


@dataclass
class SamplingResult:
    """Positive and negative candidates picked for the loss.

    Attributes:
        pos_inds, neg_inds: indices into ``bboxes`` (which starts with the gts when they were
            added as proposals).
        bboxes: ``[N', 4]`` the candidates the indices refer to.
        pos_gt_inds: ``[P]`` 0-based gt index of each positive.
        pos_gt_bboxes: ``[P, 4]`` its gt box; ``pos_gt_labels [P]`` its class (or None).
        pos_is_gt: ``[P]`` 1 where the positive is a gt added as a proposal.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    bboxes: Tensor
    pos_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor | None
    pos_is_gt: Tensor

    @property
    def pos_bboxes(self) -> Tensor:
        return self.bboxes[self.pos_inds]

    @property
    def neg_bboxes(self) -> Tensor:
        return self.bboxes[self.neg_inds]

    @classmethod
    def build(
        cls,
        pos_inds: Tensor,
        neg_inds: Tensor,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        assign_result: AssignResult,
        gt_flags: Tensor,
    ) -> SamplingResult:
        pos_gt_inds = assign_result.gt_inds[pos_inds] - 1
        if gt_bboxes.numel() == 0:
            pos_gt_bboxes = gt_bboxes.new_zeros(0, 4)  # no positives without gts
        else:
            pos_gt_bboxes = gt_bboxes[pos_gt_inds]
        labels = assign_result.labels
        return cls(
            pos_inds,
            neg_inds,
            bboxes,
            pos_gt_inds,
            pos_gt_bboxes,
            labels[pos_inds] if labels is not None else None,
            gt_flags[pos_inds],
        )


class PseudoSampler:
    """Every positive and every negative of the assignment (dense heads without sampling)."""

    sampling = False

    def sample(
        self,
        assign_result: AssignResult,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_labels: Tensor | None = None,
    ) -> SamplingResult:
        pos_inds = torch.nonzero(assign_result.gt_inds > 0).flatten()
        neg_inds = torch.nonzero(assign_result.gt_inds == 0).flatten()
        gt_flags = bboxes.new_zeros(bboxes.shape[0], dtype=torch.uint8)
        return SamplingResult.build(
            pos_inds, neg_inds, bboxes[:, :4], gt_bboxes, assign_result, gt_flags
        )


class RandomSampler:
    """A random subset: at most ``num * pos_fraction`` positives, negatives fill up to ``num``.

    Args:
        num: candidates per image.
        pos_fraction: upper bound of the share of positives.
        neg_pos_ub: with ``>= 0``, at most ``neg_pos_ub * max(1, num_pos)`` negatives.
        add_gt_as_proposals: prepend the gt boxes to the candidates as positives (R-CNN).
        generator: a ``torch.Generator`` for reproducible draws (default: the global RNG).
    """

    sampling = True

    def __init__(
        self,
        num: int,
        pos_fraction: float,
        neg_pos_ub: int = -1,
        add_gt_as_proposals: bool = True,
        generator: torch.Generator | None = None,
        **kwargs,
    ):
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals
        self.generator = generator

    def _random_choice(self, inds: Tensor, num: int) -> Tensor:
        if inds.numel() <= num:
            return inds
        perm = torch.randperm(inds.numel(), generator=self.generator)[:num].to(inds.device)
        return inds[perm]

    def sample(
        self,
        assign_result: AssignResult,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_labels: Tensor | None = None,
    ) -> SamplingResult:
        bboxes = bboxes[:, :4]
        gt_flags = bboxes.new_zeros(bboxes.shape[0], dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            if gt_labels is None:
                raise ValueError('gt_labels are needed to add gts as proposals')
            bboxes = torch.cat([gt_bboxes[:, :4].to(bboxes.dtype), bboxes])
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([gt_flags.new_ones(len(gt_bboxes)), gt_flags])

        num_expected_pos = int(self.num * self.pos_fraction)
        pos_inds = self._random_choice(
            torch.nonzero(assign_result.gt_inds > 0).flatten(), num_expected_pos
        )
        num_expected_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_expected_neg = min(
                num_expected_neg, int(self.neg_pos_ub * max(1, pos_inds.numel()))
            )
        neg_inds = self._random_choice(
            torch.nonzero(assign_result.gt_inds == 0).flatten(), num_expected_neg
        )
        return SamplingResult.build(pos_inds, neg_inds, bboxes, gt_bboxes, assign_result, gt_flags)


SAMPLERS = {'PseudoSampler': PseudoSampler, 'RandomSampler': RandomSampler}


def build_sampler(cfg: SamplerSettings | dict | None) -> PseudoSampler | RandomSampler:
    """A sampler from its typed settings or its config dict (``None``: :class:`PseudoSampler`,
    MMDetection 2.x's default for dense heads whose ``train_cfg`` names no sampler)."""
    if cfg is None:
        return PseudoSampler()
    if isinstance(cfg, SamplerSettings):
        if cfg.type == 'PseudoSampler':
            return PseudoSampler()
        return RandomSampler(cfg.num, cfg.pos_fraction, cfg.neg_pos_ub, cfg.add_gt_as_proposals)
    cfg = dict(cfg)
    kind = cfg.pop('type')
    if kind not in SAMPLERS:
        raise ConfigError(f'unsupported sampler {kind!r} (supported: {", ".join(SAMPLERS)})')
    return SAMPLERS[kind](**cfg)
