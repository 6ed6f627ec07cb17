"""Generate the project's classification data set: crops of the synthetic shapes, ImageNet layout
(deterministic for a given seed).

Usage (these are the defaults):

    python tools/dataset/generate_synthetic_cls.py --out-dir data/synthetic_cls --seed 0
"""

import argparse
import time

from deploy.apis.cli import HelpFormatter, run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument('--out-dir', default='data/synthetic_cls', help='data set root')
    parser.add_argument('--num-train', type=int, default=3000, help='training crops')
    parser.add_argument('--num-val', type=int, default=300, help='validation crops')
    parser.add_argument('--seed', type=int, default=0, help='the same seed gives the same bytes')
    args = parser.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        parser.error('--num-train and --num-val must not be negative')

    from deploy.datasets.synthetic_classification import generate_synthetic_classification

    start = time.perf_counter()
    paths = generate_synthetic_classification(args.out_dir, args.num_train, args.num_val, args.seed)
    elapsed = time.perf_counter() - start
    print(f'wrote {paths["train"]} and {paths["val"]} in {elapsed:.1f}s')
    return 0


if __name__ == '__main__':
    run_cli(main)
