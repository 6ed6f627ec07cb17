"""Verify an exported model against the eager PyTorch reference.

Two comparisons per test case:

* raw head outputs (``--skip-postprocess`` graph vs ``forward_raw``): ``np.allclose`` with
  :data:`RAW_RTOL` / :data:`RAW_ATOL`, which catches numeric drift in backbone, neck and head;
* final detections (exported graph vs eager :meth:`predict`), both mapped to the original image by
  the shared post-processing and matched by IoU: matched fraction, max score and box error, and
  for mask models the smallest IoU between the pasted masks of a matched pair.

A case whose reference produced no detections fails: an empty comparison proves nothing.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backends.pytorch import PyTorchBackend
from ..evaluation.parity import EXACT_IOU, EXACT_SCORE, ParityStats, match_result_lists
from ..postprocess import outputs_to_results

#: tolerances for raw head outputs (float32 conv stacks drift ~1e-5 relative between runtimes)
RAW_RTOL = 1e-3
RAW_ATOL = 1e-4
#: detection parity: fraction matched (same label, IoU >= 0.5), score and box (pixels) errors
MIN_MATCHED = 0.99
MIN_EXACT = 0.95
BOX_ATOL = 1.0
#: pasted (binary, original-image) masks of an exact pair: a few boundary pixels may flip
MIN_MASK_IOU = 0.9


@dataclass
class VerifyCase:
    """One verification input: a batch and its pipeline metas."""

    name: str
    img: torch.Tensor
    metas: list[dict]

    def inputs(self) -> dict[str, np.ndarray]:
        shapes = [m['img_shape'][:2] for m in self.metas]
        return dict(input=self.img.numpy(), img_shape=np.asarray(shapes, np.float32))


@dataclass
class VerifyRow:
    case: str
    input_shape: tuple
    raw_max_err: float | None
    raw_ok: bool | None
    stats: ParityStats = field(default_factory=ParityStats)

    @property
    def passed(self) -> bool:
        return self.raw_ok is not False and self.stats.passed(
            MIN_MATCHED, MIN_EXACT, BOX_ATOL, MIN_MASK_IOU
        )


def verify_backend(
    detector: torch.nn.Module, backend, cases: list[VerifyCase], raw_backend=None
) -> list[VerifyRow]:
    """Run every case on the reference and on ``backend`` (and ``raw_backend`` when given)."""
    reference = PyTorchBackend(detector, mode='eager')
    rows = []
    for case in cases:
        inputs = case.inputs()
        ref = outputs_to_results(reference(inputs), case.metas)
        test = outputs_to_results(backend(inputs), case.metas)
        raw_err = raw_ok = None
        if raw_backend is not None:
            with torch.no_grad():
                expected = {k: v.numpy() for k, v in detector.forward_raw(case.img).items()}
            actual = raw_backend(dict(input=inputs['input']))
            raw_err = max(float(np.abs(actual[k] - v).max()) for k, v in expected.items())
            raw_ok = all(
                np.allclose(actual[k], v, rtol=RAW_RTOL, atol=RAW_ATOL) for k, v in expected.items()
            )
        rows.append(
            VerifyRow(
                case.name, tuple(case.img.shape), raw_err, raw_ok, match_result_lists(ref, test)
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
                f'{s.max_score_err:.1e}',
                f'{s.max_box_err:.2f}',
                '-' if s.min_mask_iou is None else f'{s.min_mask_iou:.3f}',
                verdict,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    out = [fmt.format(*header), fmt.format(*('-' * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out.append(
        f'tolerances: raw outputs rtol={RAW_RTOL} atol={RAW_ATOL}; detections matched by '
        f'label and IoU>=0.5 (need >={100 * MIN_MATCHED:.0f}%); exact = same detection '
        f'(IoU>={EXACT_IOU}, score err<={EXACT_SCORE}; need >={100 * MIN_EXACT:.0f}%); '
        f'box err over exact pairs <={BOX_ATOL}px in the original image; pasted masks of exact '
        f'pairs IoU>={MIN_MASK_IOU}'
    )
    return '\n'.join(out)
