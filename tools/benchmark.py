"""Benchmark backends on the same span (pre-processing + inference + post-processing), or time
the ONNX exporters.

    python tools/benchmark.py CONFIG model.onnx checkpoint.pth --backend onnxruntime pytorch \
        --shape 800 1216 --batch-size 1 --warmup 5 --iters 20 --threads 2 \
        --json work_dirs/bench.json --plot work_dirs/bench.png
    python tools/benchmark.py CONFIG model.onnx model.int8.onnx model.onnx model.onnx \
        --backend onnxruntime onnxruntime openvino openvino --precision auto auto fp32 bf16 \
        --rounds 3
    python tools/benchmark.py --export-time CONFIG checkpoint.pth --shape 800 1216

See docs/benchmark.md for what is timed and the JSON schema.
"""

import argparse
import sys
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.backends import BACKENDS
from deploy.config import add_cfg_options_argument

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'


def parse_args(argv=None):
    parser = ArgumentParser(description='Benchmark detector backends like with like')
    parser.add_argument('config', help='model config')
    parser.add_argument(
        'models',
        nargs='+',
        metavar='MODEL',
        help='model files: checkpoint (pytorch), .onnx (onnxruntime), .engine (tensorrt); with '
        '--export-time, the checkpoint to export',
    )
    parser.add_argument(
        '--backend',
        nargs='+',
        choices=BACKENDS,
        default=None,
        help='one per MODEL (default: from each file suffix; openvino must be named)',
    )
    parser.add_argument(
        '--precision',
        nargs='+',
        choices=('auto', 'fp32', 'bf16', 'int8'),
        default=None,
        help='one per MODEL: the inference precision of backends that choose it at load '
        "(openvino); auto = the file's",
    )
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='measure the models in turn this many times over (A B A B ..), merging the '
        'samples: ratios stay fair when the load of a shared machine changes',
    )
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=None,
        metavar='H [W]',
        help="network input (default: a static model's shape, else the config's test scale)",
    )
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch / ONNX Runtime intra-op / OpenCV threads (default: all CPUs allowed)',
    )
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--image', default=str(DEMO_IMAGE), help='the real image to pre-process')
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='weights for FLOP counting (default: the pytorch MODEL, else random weights)',
    )
    parser.add_argument('--json', default=None, metavar='OUT', help='write the report as JSON')
    parser.add_argument('--plot', default=None, metavar='OUT.png', help='latency plot (PNG)')
    parser.add_argument(
        '--no-ort-profile',
        action='store_true',
        help='skip the ONNX Runtime profiler run (in-graph post-processing share)',
    )
    parser.add_argument('--profile-iters', type=int, default=5, help='profiled ORT runs')
    parser.add_argument(
        '--peak-size', type=int, default=2048, help='matrix size of the FP32 peak measurement'
    )
    parser.add_argument(
        '--export-time',
        action='store_true',
        help='time deploy.export.onnx_export.export_onnx per exporter instead (MODEL: checkpoint)',
    )
    parser.add_argument(
        '--exporters',
        nargs='+',
        choices=('dynamo', 'torchscript'),
        default=('dynamo', 'torchscript'),
        help='with --export-time: the exporters to time',
    )
    parser.add_argument(
        '--dynamic-export', action='store_true', help='with --export-time: dynamic axes'
    )
    parser.add_argument(
        '--opset-version', type=int, default=None, help='with --export-time (default: 18)'
    )
    add_cfg_options_argument(parser)
    args = parser.parse_args(argv)
    if args.export_time and len(args.models) != 1:
        parser.error('--export-time takes exactly one checkpoint')
    return args


def check_args(args) -> None:
    """Everything that can be checked before a model is loaded."""
    from deploy.apis.checks import (
        check_device,
        check_input_file,
        check_non_negative,
        check_opset,
        check_output_file,
        check_positive,
        check_shape,
    )

    check_shape(args.shape)
    check_positive('--batch-size', args.batch_size, allow_none=False)
    check_non_negative('--warmup', args.warmup)
    check_positive('--iters', args.iters, allow_none=False)
    check_positive('--rounds', args.rounds, allow_none=False)
    check_positive('--threads', args.threads)
    check_positive('--profile-iters', args.profile_iters, allow_none=False)
    check_positive('--peak-size', args.peak_size, allow_none=False)
    if args.opset_version is not None:
        check_opset(args.opset_version)
    if 'tensorrt' not in (args.backend or ()):
        check_device(args.device)
    check_input_file(args.image, '--image')
    for model in args.models:
        check_input_file(model, 'model file')
    check_output_file(args.json, '--json')
    check_output_file(args.plot, '--plot')


def options_from_args(args: argparse.Namespace):
    """The inference benchmark's options from the checked command line."""
    from deploy.benchmark import BenchmarkOptions

    return BenchmarkOptions(
        image=args.image,
        shape=args.shape,
        batch_size=args.batch_size,
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
        device=args.device,
        checkpoint=args.checkpoint,
        cfg_options=args.cfg_options,
        ort_profile=not args.no_ort_profile,
        profile_iters=args.profile_iters,
        peak_size=args.peak_size,
        precisions=args.precision,
        rounds=args.rounds,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    from deploy.benchmark import (
        benchmark_models,
        format_markdown,
        plot_latency,
        run_export_timing,
        write_json,
    )

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731  (stdout carries the table)
    if args.export_time:
        report = run_export_timing(
            args.config,
            args.models[0],
            image=args.image,
            shape=args.shape,
            exporters=tuple(args.exporters),
            dynamic=args.dynamic_export,
            opset=args.opset_version,
            threads=args.threads,
            cfg_options=args.cfg_options,
            logger=log,
        )
    else:
        report = benchmark_models(
            args.config, args.models, args.backend, options_from_args(args), log
        )
    print(format_markdown(report))
    if args.json:
        log(f'report written to {write_json(report, args.json)}')
    if args.plot:
        if args.export_time:
            log('note: --plot applies to inference benchmarks only')
        else:
            log(f'plot written to {plot_latency(report, args.plot)}')
    return 0


if __name__ == '__main__':
    run_cli(main)
