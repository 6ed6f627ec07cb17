"""Generate the project's COCO-format synthetic data set (deterministic for a given seed).

Usage (these are the defaults):

    python tools/dataset/generate_synthetic_coco.py --out-dir data/synthetic_coco --seed 0
"""

import time

from deploy.apis.cli import ArgumentParser, run_cli


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='data/synthetic_coco', help='data set root')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='the same seed gives the same bytes')
    args = parser.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        parser.error('--num-train and --num-val must not be negative')

    from deploy.datasets.synthetic import generate_synthetic_coco

    start = time.perf_counter()
    paths = generate_synthetic_coco(args.out_dir, args.num_train, args.num_val, args.seed)
    elapsed = time.perf_counter() - start
    print(f'wrote {paths["train"]} and {paths["val"]} in {elapsed:.1f}s')
    return 0


if __name__ == '__main__':
    run_cli(main)
