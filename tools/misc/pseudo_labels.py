"""Turn a reference run's class scores into an annotation file, for accuracy parity without labels.

A classifier whose weights do not fit the data set (random weights, or ImageNet classes on the
generated shapes) scores chance accuracy, and equal chance proves little. Scored against the
reference's own top-1 classes, PyTorch gets 100% top-1 and a backend loses accuracy for every
image it classifies differently:

    python tools/test.py CFG CKPT --backend pytorch --out work_dirs/reference.pkl
    python tools/misc/pseudo_labels.py work_dirs/reference.pkl data/synthetic_cls/val \
        work_dirs/pseudo.txt
    python tools/test.py CFG CKPT --backend pytorch --eval accuracy \
        --cfg-options data.test.ann_file=work_dirs/pseudo.txt
    python tools/test.py CFG model.onnx --backend onnxruntime --eval accuracy \
        --cfg-options data.test.ann_file=work_dirs/pseudo.txt
"""

import argparse

from deploy.apis.cli import HelpFormatter, run_cli
from deploy.errors import DeployError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Pseudo labels from a reference classification', formatter_class=HelpFormatter
    )
    parser.add_argument('results', help='results pickle of a classifier (tools/test.py --out)')
    parser.add_argument('img_prefix', help='the image folder the annotation paths are relative to')
    parser.add_argument('out', help='annotation file to write (`path label` per line)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from deploy.evaluation.accuracy import write_pseudo_labels
    from deploy.pickles import load_pickle

    what = 'classifier results pickle of tools/test.py --out'
    records = load_pickle(args.results, what)
    try:
        filenames = [r['filename'] for r in records]
        scores = np.stack([r['scores'] for r in records])
    except (KeyError, TypeError, ValueError) as err:
        raise DeployError(f'{args.results} is not a {what}: {err}') from None
    try:
        out = write_pseudo_labels(filenames, scores, args.img_prefix, args.out)
    except ValueError as err:  # an image outside img_prefix
        raise DeployError(f'{err}: give the image folder of the results') from None
    print(f'{len(filenames)} pseudo labels written to {out}')
    return 0


if __name__ == '__main__':
    run_cli(main)
