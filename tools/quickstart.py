"""The one-command tour: generate the data set, export + verify + evaluate the bundled models on
PyTorch and ONNX Runtime, and print the model x backend x {box AP, mask AP, top-1, latency}
table.

    python tools/quickstart.py
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.apis.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--regression-file', default=str(ROOT / 'tests/regression/bundled.yml'))
    parser.add_argument('--data-root', default=str(ROOT / 'data/synthetic_coco'))
    parser.add_argument('--cls-data-root', default=str(ROOT / 'data/synthetic_cls'))
    parser.add_argument('--work-dir', default=str(ROOT / 'work_dirs/quickstart'))
    args = parser.parse_args(argv)

    from deploy.apis.regression import (
        format_markdown,
        load_regression_file,
        run_regression,
        write_reports,
    )
    from deploy.datasets.synthetic import generate_synthetic_coco
    from deploy.datasets.synthetic_classification import generate_synthetic_classification

    data_root = Path(args.data_root)
    if not (data_root / 'annotations' / 'instances_val2017.json').is_file():
        print(f'generating the synthetic COCO data set in {data_root} ...')
        generate_synthetic_coco(data_root)
    cls_root = Path(args.cls_data_root)
    if not (cls_root / 'meta' / 'val.txt').is_file():
        print(f'generating the synthetic classification data set in {cls_root} ...')
        generate_synthetic_classification(cls_root)
    import os

    os.chdir(ROOT)  # configs name the data set and checkpoints relative to the repository
    rows = run_regression(load_regression_file(args.regression_file), args.work_dir)
    write_reports(rows, args.work_dir)
    print()
    print(format_markdown(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == '__main__':
    run_cli(main)
