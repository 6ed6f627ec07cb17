"""Generate the project's COCO-format synthetic data set (deterministic for a given seed).

    python tools/dataset/generate_synthetic_coco.py --out-dir data/synthetic_coco
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy.apis.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='data/synthetic_coco')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    from deploy.datasets.synthetic import generate_synthetic_coco
    start = time.perf_counter()
    paths = generate_synthetic_coco(args.out_dir, args.num_train, args.num_val, args.seed)
    print(f'wrote {paths["train"]} and {paths["val"]} in {time.perf_counter() - start:.1f}s')
    return 0


if __name__ == '__main__':
    run_cli(main)
