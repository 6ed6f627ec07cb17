"""Verify an exported model against the eager PyTorch reference.

Two comparisons per test case:

* raw head outputs (``--skip-postprocess`` graph vs ``forward_raw``): ``np.allclose`` with the
  precision's raw tolerances, which catches numeric drift in backbone, neck and head;
* final detections (exported graph vs eager :meth:`predict`), both mapped to the original image by
  the shared post-processing and matched by IoU: matched fraction, max score and box error, for
  mask models the smallest IoU between the pasted masks of a matched pair, and the *parity AP*:
  the COCO AP of the exported model's detections scored against the reference's.

A case whose reference produced no detections fails: an empty comparison proves nothing.

What passes depends on the precision of the file (:data:`TOLERANCES`): an FP32 graph must give the
same detections; FP16 and INT8 graphs round every activation, so they are held to a high matched
fraction and parity AP instead of numeric identity.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.pytorch import PyTorchBackend
from ..datasets.pipeline import DecodedImagePipeline, collate, network_inputs
from ..evaluation.parity import EXACT_IOU, EXACT_SCORE, ParityStats, match_result_lists, parity_ap
from ..postprocess import outputs_to_results


@dataclass(frozen=True)
class Tolerances:
    """What a verification case must meet.

    Attributes:
        raw_rtol, raw_atol: ``np.allclose`` of the raw head outputs (``raw_atol`` times the
            tensor's largest magnitude where that is above 1).
        min_matched: fraction of detections matched by label and IoU >= 0.5.
        min_exact: fraction of "exact" pairs (IoU >= ``EXACT_IOU``, score error <= ``EXACT_SCORE``).
        box_atol: largest box error (pixels, original image) over exact pairs.
        min_mask_iou: smallest IoU of the pasted masks of an exact pair.
        min_parity_ap: smallest parity AP (``None``: reported, not required).
    """

    raw_rtol: float
    raw_atol: float
    min_matched: float
    min_exact: float
    box_atol: float
    min_mask_iou: float
    min_parity_ap: float | None = None

    def describe(self, raw: bool = True) -> str:
        parts = [f'raw outputs rtol={self.raw_rtol} atol={self.raw_atol}'] if raw else []
        parts.append(
            f'detections matched by label and IoU>=0.5 (need >={100 * self.min_matched:.0f}%)'
        )
        if self.min_exact:
            parts.append(
                f'exact = same detection (IoU>={EXACT_IOU}, score err<={EXACT_SCORE}; need '
                f'>={100 * self.min_exact:.0f}%); box err over exact pairs <={self.box_atol}px in '
                f'the original image; pasted masks of exact pairs IoU>={self.min_mask_iou}'
            )
        parts.append('max score err over every matched pair')
        if self.min_parity_ap is not None:
            parts.append(
                f"parity AP (AP against the reference's detections) >={self.min_parity_ap}"
            )
        return 'tolerances: ' + '; '.join(parts)


#: per precision of the exported file. FP32 must reproduce the detections (float32 conv stacks
#: drift ~1e-5 relative between runtimes); reduced precisions are held to parity AP.
TOLERANCES = {
    'fp32': Tolerances(
        1e-3, 1e-4, min_matched=0.99, min_exact=0.95, box_atol=1.0, min_mask_iou=0.9
    ),
    'fp16': Tolerances(
        5e-2,
        5e-2,
        min_matched=0.9,
        min_exact=0.0,
        box_atol=4.0,
        min_mask_iou=0.8,
        min_parity_ap=0.85,
    ),
    # OpenVINO with INFERENCE_PRECISION_HINT=bf16 (8-bit mantissa in the convolutions; decoding
    # and NMS stay FP32). Measured on the bundled models: parity AP 0.93-0.97, 97-99% matched.
    'bf16': Tolerances(
        5e-2,
        5e-2,
        min_matched=0.9,
        min_exact=0.0,
        box_atol=4.0,
        min_mask_iou=0.8,
        min_parity_ap=0.85,
    ),
    # Static INT8 (QDQ, tools/quantize.py): every activation rounded to 256 levels. Measured on
    # the bundled models: parity AP 0.83-0.92 against FP32 / PyTorch, box and mask AP on the val
    # set within 0.3 of FP32.
    'int8': Tolerances(
        0.5,
        0.5,
        min_matched=0.85,
        min_exact=0.0,
        box_atol=8.0,
        min_mask_iou=0.7,
        min_parity_ap=0.7,
    ),
}


@dataclass
class VerifyCase:
    """One verification input: a batch and its pipeline metas (the reference's input), and the
    same images decoded (for models that pre-process in the graph)."""

    name: str
    img: torch.Tensor
    metas: list[dict]
    images: list[np.ndarray] | None = None

    def inputs(self) -> dict[str, np.ndarray]:
        return network_inputs(self.img, self.metas)

    def inputs_for(self, backend) -> tuple[dict[str, np.ndarray], list[dict]]:
        """The backend's inputs and metas: decoded images where its graph takes them."""
        spec = getattr(backend, 'spec', None)
        if spec is None or spec.inputs.layout != 'bgr_uint8':
            return self.inputs(), self.metas
        if self.images is None:
            raise ValueError(f'case {self.name} has no decoded images for {backend.name}')
        img, metas = collate([DecodedImagePipeline()(image) for image in self.images])
        return network_inputs(img, metas), metas


@dataclass
class VerifyRow:
    case: str
    input_shape: tuple
    raw_max_err: float | None
    raw_ok: bool | None
    stats: ParityStats = field(default_factory=ParityStats)
    parity_ap: float | None = None
    tolerances: Tolerances = TOLERANCES['fp32']
    #: the reference's detections per image (a case where an image has none proves less)
    ref_counts: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        t = self.tolerances
        ap_ok = t.min_parity_ap is None or (
            self.parity_ap is not None and self.parity_ap >= t.min_parity_ap
        )
        return (
            self.raw_ok is not False
            and ap_ok
            and self.stats.passed(t.min_matched, t.min_exact, t.box_atol, t.min_mask_iou)
        )


def verify_backend(
    detector: torch.nn.Module,
    backend,
    cases: list[VerifyCase],
    raw_backend=None,
    tolerances: Tolerances = TOLERANCES['fp32'],
) -> list[VerifyRow]:
    """Run every case on the reference and on ``backend`` (and ``raw_backend`` when given)."""
    reference = PyTorchBackend(detector, mode='eager')
    rows = []
    for case in cases:
        inputs = case.inputs()
        ref = outputs_to_results(reference(inputs), case.metas)
        test_inputs, test_metas = case.inputs_for(backend)
        test = outputs_to_results(backend(test_inputs), test_metas)
        raw_err = raw_ok = None
        if raw_backend is not None:
            with torch.no_grad():
                expected = {k: v.numpy() for k, v in detector.forward_raw(case.img).items()}
            actual = raw_backend(dict(input=inputs['input']))
            raw_err = max(float(np.abs(actual[k] - v).max()) for k, v in expected.items())
            # float32 rounding grows with a tensor's magnitude (logits of 10-20 through a deep
            # stack drift ~1e-4 between runtimes): atol is relative to its largest value above 1
            raw_ok = all(
                np.allclose(
                    actual[k],
                    v,
                    rtol=tolerances.raw_rtol,
                    atol=tolerances.raw_atol * max(1.0, float(np.abs(v).max(initial=0.0))),
                )
                for k, v in expected.items()
            )
        rows.append(
            VerifyRow(
                case.name,
                tuple(case.img.shape),
                raw_err,
                raw_ok,
                match_result_lists(ref, test),
                parity_ap(ref, test),
                tolerances,
                tuple(len(r.scores) for r in ref),
            )
        )
    return rows


def format_verify_table(rows: list[VerifyRow], backend_name: str) -> str:
    """A plain-text table of :func:`verify_backend` rows, with the tolerances stated."""
    header = [
        'case',
        'input',
        'raw max err',
        'ref dets',
        f'{backend_name} dets',
        'matched',
        'exact',
        'max score err',
        'max box err',
        'min mask IoU',
        'parity AP',
        'result',
    ]
    lines = []
    for r in rows:
        s = r.stats
        raw = (
            '-' if r.raw_max_err is None else f'{r.raw_max_err:.2e}' + ('' if r.raw_ok else ' (!)')
        )
        if r.passed:
            verdict = 'PASS'
        else:
            verdict = 'FAIL: no reference detections' if s.num_ref == 0 else 'FAIL'
        lines.append(
            [
                r.case,
                'x'.join(map(str, r.input_shape)),
                raw,
                str(s.num_ref),
                str(s.num_test),
                f'{100 * s.matched_fraction:.1f}%',
                f'{100 * s.exact_fraction:.1f}%',
                f'{s.max_matched_score_err:.1e}',
                f'{s.max_box_err:.2f}',
                '-' if s.min_mask_iou is None else f'{s.min_mask_iou:.3f}',
                '-' if r.parity_ap is None else f'{r.parity_ap:.3f}',
                verdict,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    out = [fmt.format(*header), fmt.format(*('-' * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    tolerances = rows[0].tolerances if rows else TOLERANCES['fp32']
    out.append(tolerances.describe(raw=any(r.raw_max_err is not None for r in rows)))
    return '\n'.join(out)
