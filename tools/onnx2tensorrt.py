"""Build a TensorRT engine from an exported ONNX file, optionally verify it.

    python tools/onnx2tensorrt.py CONFIG model.onnx --output-file model.engine --fp16 --verify \
        --checkpoint model.pth

Flags follow MMDetection 2.x's tools/deployment/onnx2tensorrt.py (--trt-file is --output-file
here), plus --opt-shape, --timing-cache, --checkpoint, --device and --cfg-options. Shapes are
``H W`` (batch 1) or ``B 3 H W``; anything not given comes from the config's backend_config and
the ONNX metadata (see docs/tensorrt.md). Writes ``model.engine`` and ``model.engine.json``.
"""

import argparse
import sys
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'


def parse_args(argv=None):
    parser = ArgumentParser(description='Build a TensorRT engine from an ONNX file')
    parser.add_argument('config', help='model config file (backend_config, test pipeline)')
    parser.add_argument('model', help='ONNX file exported by tools/pytorch2onnx.py')
    parser.add_argument(
        '--output-file',
        '--trt-file',
        default='tmp.engine',
        help='engine file to write (a .json sidecar is written beside it)',
    )
    parser.add_argument(
        '--fp16',
        action='store_true',
        help='FP16 feature extractor, FP32 decode and NMS (TensorRT 10: builder '
        'flag; TensorRT 11: FP16-converted ONNX, strongly typed)',
    )
    shape_help = 'profile shape of the image input: H W or B 3 H W'
    parser.add_argument('--min-shape', type=int, nargs='+', default=None, help=shape_help)
    parser.add_argument(
        '--opt-shape', '--shape', type=int, nargs='+', default=None, help=shape_help
    )
    parser.add_argument('--max-shape', type=int, nargs='+', default=None, help=shape_help)
    parser.add_argument(
        '--workspace-size',
        type=float,
        default=None,
        help='workspace memory-pool limit in GiB (default: backend_config or 1)',
    )
    parser.add_argument(
        '--timing-cache',
        default=None,
        help='timing cache file, read and updated (default: next to the engine)',
    )
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare TensorRT with ONNX Runtime (and PyTorch with --checkpoint)',
    )
    parser.add_argument('--input-img', default=str(DEMO_IMAGE), help='verification image')
    parser.add_argument('--test-img', default=None, help='second verification image')
    parser.add_argument(
        '--checkpoint', default=None, help='checkpoint for the PyTorch comparison of --verify'
    )
    parser.add_argument('--device', default='cuda:0', help='GPU to build and run on')
    parser.add_argument('--verbose', action='store_true', help='TensorRT verbose log')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def tensorrt_options(args: argparse.Namespace):
    """The job's options from the parsed command line (their cheap checks run here)."""
    from deploy.apis.tensorrt import TensorRTOptions, cli_input_shapes

    return TensorRTOptions(
        cfg_options=args.cfg_options,
        precision='fp16' if args.fp16 else None,
        input_shapes=cli_input_shapes(args.min_shape, args.opt_shape, args.max_shape),
        workspace_size=int(args.workspace_size * (1 << 30)) if args.workspace_size else None,
        timing_cache=args.timing_cache,
        verify=args.verify,
        input_img=args.input_img,
        test_img=args.test_img,
        checkpoint=args.checkpoint,
        device=args.device,
        verbose=args.verbose,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.tensorrt import build_tensorrt_engine

    options = tensorrt_options(args)
    result = build_tensorrt_engine(args.config, args.model, args.output_file, options)
    print(f'saved {result.engine_file}')
    if options.verify:
        if not result.verified:
            print('verification FAILED', file=sys.stderr)
            return 1
        print('verification passed')
    return 0


if __name__ == '__main__':
    run_cli(main)
