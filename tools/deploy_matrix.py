"""Which engine and precision to deploy on this machine: export FP32 ONNX, quantise INT8, then
evaluate and time every (backend, precision) this machine can run.

    python tools/deploy_matrix.py configs/bundled/retinanet_r18_tiny_synthetic.py \
        checkpoints/retinanet_r18_tiny_synthetic.pth --num-images 50 --rounds 3 \
        --json work_dirs/matrix.json --plot work_dirs/matrix.png --ap-floor 60

Prints one table (status, size, AP, drop below PyTorch, ms, images/s, latency ratio to PyTorch)
and the fastest row within --max-ap-drop; exits 1 when a row that ran fails or is below
--ap-floor. The AP of each row is what tools/test.py gives for that file, backend and precision.
"""

import argparse
import json
import sys
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description='Deployment matrix: every backend and precision here')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='PyTorch checkpoint')
    parser.add_argument('--num-images', type=int, default=None, help='test images per row')
    parser.add_argument(
        '--rows',
        nargs='+',
        default=(),
        metavar='BACKEND:PRECISION',
        help='only these rows (e.g. pytorch:fp32 onnxruntime:int8; default: all)',
    )
    parser.add_argument('--metrics', nargs='+', default=(), help="default: the config's")
    parser.add_argument('--max-ap-drop', type=float, default=0.3, help='AP budget (points)')
    parser.add_argument('--ap-floor', type=float, default=None, help='fail below this AP')
    parser.add_argument('--work-dir', default='work_dirs/deploy_matrix', help='model files')
    parser.add_argument('--exporter', choices=('dynamo', 'torchscript'), default=None)
    parser.add_argument('--preprocess-in-graph', action='store_true')
    parser.add_argument('--calib-images', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=3, help='interleaved timing rounds')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per round')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--image', default=str(DEMO_IMAGE), help='the image the timing uses')
    parser.add_argument('--json', default=None, metavar='OUT', help='write the report as JSON')
    parser.add_argument('--plot', default=None, metavar='OUT.png', help='AP against latency')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace):
    from deploy.apis.checks import check_input_file, check_output_file, check_positive
    from deploy.benchmark.matrix import MatrixOptions

    check_input_file(args.config, 'config')
    check_input_file(args.checkpoint, 'checkpoint')
    check_input_file(args.image, '--image')
    check_positive('--num-images', args.num_images)
    for flag in ('calib_images', 'rounds', 'iters'):
        check_positive(f'--{flag.replace("_", "-")}', getattr(args, flag), allow_none=False)
    check_positive('--threads', args.threads)
    check_output_file(args.json, '--json')
    check_output_file(args.plot, '--plot')
    return MatrixOptions(
        image=args.image,
        work_dir=args.work_dir,
        num_images=args.num_images,
        rows=tuple(args.rows),
        metrics=tuple(args.metrics),
        max_ap_drop=args.max_ap_drop,
        ap_floor=args.ap_floor,
        exporter=args.exporter,
        preprocess_in_graph=args.preprocess_in_graph,
        calib_images=args.calib_images,
        rounds=args.rounds,
        iters=args.iters,
        warmup=args.warmup,
        threads=args.threads,
        cfg_options=args.cfg_options,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    options = options_from_args(args)
    from deploy.benchmark.matrix import DeploymentMatrix, format_table, plot_matrix
    from deploy.fileio import write_atomic

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731  (stdout carries the table)
    report = DeploymentMatrix(args.config, args.checkpoint, options, log).run()
    print(format_table(report))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2, default=str))
        log(f'report written to {args.json}')
    if args.plot:
        log(f'plot written to {plot_matrix(report, args.plot)}')
    return 1 if report['failures'] else 0


if __name__ == '__main__':
    run_cli(main)
