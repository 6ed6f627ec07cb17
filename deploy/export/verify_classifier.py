"""Verify an exported classifier against the eager PyTorch reference.

Per test case (an image, a second image of another view, a batch of both):

* raw logits (``--skip-postprocess`` graph vs ``forward_raw``): ``np.allclose`` with
  :data:`RAW_RTOL` / :data:`RAW_ATOL`, as for detectors;
* the ``scores`` output (probabilities) against eager :meth:`predict`: ``np.allclose`` with
  :data:`SCORE_RTOL` / :data:`SCORE_ATOL` (a softmax passes its logits' relative error on to
  each probability, so large probabilities get a proportional tolerance);
* the top-k labels (k = the head's largest ``topk``, at most the number of classes), ordered:
  they must be equal, except where two classes swap whose reference scores are within
  :data:`TIE_ATOL` of each other (a tie neither side can be blamed for).

A case whose reference scores are flat (every class equal, e.g. a dead network) fails: comparing
them would prove nothing.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..evaluation.accuracy import topk_labels
from .verify import TOLERANCES, VerifyCase

#: raw logits: the FP32 raw-output tolerances of the detectors
RAW_RTOL = TOLERANCES['fp32'].raw_rtol
RAW_ATOL = TOLERANCES['fp32'].raw_atol

#: probabilities: |test - ref| <= SCORE_ATOL + SCORE_RTOL * |ref|
SCORE_RTOL = 1e-3
SCORE_ATOL = 1e-5
#: two reference scores closer than this are a tie: their order may differ between runtimes
TIE_ATOL = 1e-6
#: a reference row whose scores span less than this is flat (nothing to compare)
FLAT_SPAN = 1e-6


@dataclass
class ClassifierVerifyRow:
    """The comparison of one case; :attr:`passed` applies the tolerances above."""

    case: str
    input_shape: tuple
    k: int
    raw_max_err: float | None
    raw_ok: bool | None
    max_score_err: float
    scores_ok: bool
    topk_agree: int
    top1_agree: int
    num_images: int
    flat_reference: bool

    @property
    def passed(self) -> bool:
        return (
            self.raw_ok is not False
            and not self.flat_reference
            and self.scores_ok
            and self.topk_agree == self.num_images
        )


def _agreeing_rows(ref: np.ndarray, test: np.ndarray, k: int) -> tuple[int, int]:
    """``(rows whose top-k agree, rows whose top-1 agrees)``, ties within TIE_ATOL forgiven."""
    ref_top, test_top = topk_labels(ref, k), topk_labels(test, k)
    # Read both label lists on the reference's scores: equal scores position by position means
    # the test's order is a valid order of the reference (only tied classes swapped).
    ref_at_ref = np.take_along_axis(ref, ref_top, axis=1)
    ref_at_test = np.take_along_axis(ref, test_top, axis=1)
    same = (ref_top == test_top) | (np.abs(ref_at_ref - ref_at_test) <= TIE_ATOL)
    return int(same.all(axis=1).sum()), int(same[:, 0].sum())


def verify_classifier(
    model: torch.nn.Module, backend, cases: list[VerifyCase], raw_backend=None, k: int = 5
) -> list[ClassifierVerifyRow]:
    """Run every case on the eager ``model`` and on ``backend`` (and ``raw_backend``)."""
    rows = []
    for case in cases:
        with torch.no_grad():
            ref = model.predict(case.img).numpy()
            logits = model.forward_raw(case.img)['cls_score'].numpy()
        test = backend(dict(input=case.img.numpy()))['scores']
        kk = min(k, ref.shape[1])
        raw_err = raw_ok = None
        if raw_backend is not None:
            actual = raw_backend(dict(input=case.img.numpy()))['cls_score']
            raw_err = float(np.abs(actual - logits).max())
            raw_ok = bool(np.allclose(actual, logits, rtol=RAW_RTOL, atol=RAW_ATOL))
        finite = np.isfinite(ref).all() and np.isfinite(test).all()
        score_err = float(np.abs(test - ref).max()) if finite else float('inf')
        scores_ok = bool(finite and np.allclose(test, ref, rtol=SCORE_RTOL, atol=SCORE_ATOL))
        topk_agree, top1_agree = _agreeing_rows(ref, test, kk)
        rows.append(
            ClassifierVerifyRow(
                case=case.name,
                input_shape=tuple(case.img.shape),
                k=kk,
                raw_max_err=raw_err,
                raw_ok=raw_ok,
                max_score_err=score_err,
                scores_ok=scores_ok,
                topk_agree=topk_agree,
                top1_agree=top1_agree,
                num_images=len(ref),
                flat_reference=bool((np.ptp(ref, axis=1) < FLAT_SPAN).all()) or not finite,
            )
        )
    return rows


def format_classifier_verify_table(rows: list[ClassifierVerifyRow], backend_name: str) -> str:
    """A plain-text table of :func:`verify_classifier` rows, with the tolerances stated."""
    k = max((r.k for r in rows), default=1)
    header = [
        'case',
        'input',
        'raw max err',
        'max score err',
        f'{backend_name} top-1 = ref',
        f'top-{k} = ref',
        'result',
    ]
    lines = []
    for r in rows:
        raw = '-' if r.raw_max_err is None else f'{r.raw_max_err:.2e}'
        if r.raw_ok is False:
            raw += ' (!)'
        if r.passed:
            verdict = 'PASS'
        else:
            verdict = 'FAIL: flat reference scores' if r.flat_reference else 'FAIL'
        lines.append(
            [
                r.case,
                'x'.join(map(str, r.input_shape)),
                raw,
                f'{r.max_score_err:.1e}' + ('' if r.scores_ok else ' (!)'),
                f'{r.top1_agree}/{r.num_images}',
                f'{r.topk_agree}/{r.num_images}',
                verdict,
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    out = [fmt.format(*header), fmt.format(*('-' * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out.append(
        f'tolerances: raw logits rtol={RAW_RTOL} atol={RAW_ATOL}; scores (softmax) '
        f'rtol={SCORE_RTOL} atol={SCORE_ATOL}; top-{k} labels equal and in order on every '
        f'image (classes whose reference scores are within {TIE_ATOL} may swap)'
    )
    return '\n'.join(out)
