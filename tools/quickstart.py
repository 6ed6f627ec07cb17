"""The one-command tour: generate the data set, then export + verify + evaluate the bundled
models on PyTorch, ONNX Runtime and OpenVINO (FP32, BF16, and the INT8 file from
tools/quantize.py on both engines), and print the model x backend x {box AP, mask AP, top-1,
latency} table (one row per engine and precision). About 8 minutes on a quiet 2-core machine.

    python tools/quickstart.py
"""

import time
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--regression-file',
        default=str(ROOT / 'tests/regression/bundled.yml'),
        help='the models, metrics and tolerances to run',
    )
    parser.add_argument(
        '--models',
        nargs='+',
        metavar='NAME',
        help='run only these entries of the regression file (their `name`s)',
    )
    parser.add_argument(
        '--data-root', default=str(ROOT / 'data/synthetic_coco'), help='generated data set'
    )
    parser.add_argument(
        '--cls-data-root',
        default=str(ROOT / 'data/synthetic_cls'),
        help='generated classification data set',
    )
    parser.add_argument(
        '--work-dir',
        default=str(ROOT / 'work_dirs/quickstart'),
        help='exports (*.onnx) and the reports (report.md, report.json)',
    )
    args = parser.parse_args(argv)
    from deploy.apis.checks import check_output_dir

    check_output_dir(args.work_dir, '--work-dir')
    from deploy.apis.regression import (
        format_markdown,
        load_regression_file,
        run_regression,
        select_entries,
        write_reports,
    )
    from deploy.datasets.synthetic import generate_synthetic_coco
    from deploy.datasets.synthetic_classification import generate_synthetic_classification

    start = time.perf_counter()
    entries = select_entries(
        load_regression_file(args.regression_file), args.models, args.regression_file
    )
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
    rows = run_regression(entries, args.work_dir)
    md, js = write_reports(rows, args.work_dir)
    print()
    print(format_markdown(rows))
    print(f'\nreports: {md} and {js}; exported models: {Path(args.work_dir)}/*.onnx')
    print(f'quickstart took {time.perf_counter() - start:.0f} s')
    return 0 if all(r.passed for r in rows) else 1


if __name__ == '__main__':
    run_cli(main)
