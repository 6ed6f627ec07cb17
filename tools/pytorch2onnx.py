"""Export an MMDetection-style detector to ONNX, optionally simplify and verify it.

    python tools/pytorch2onnx.py CONFIG CHECKPOINT --dynamic-export --verify

Flags follow MMDetection 2.x's tools/deployment/pytorch2onnx.py, plus --exporter, --device and
--allow-key-mismatch. The file is written under a temporary name and replaces OUTPUT_FILE only
when complete (and, with --verify, verified).
"""

import argparse
import sys
from pathlib import Path

from deploy.apis.cli import ArgumentParser, add_checkpoint_arguments, run_cli
from deploy.config import add_cfg_options_argument
from deploy.errors import ConfigError
from deploy.export.options import (
    DEFAULT_EXPORTER,
    DEFAULT_OPSET,
    DEFAULT_PRECISION,
    EXPORTERS,
    PRECISIONS,
)

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument(
        'checkpoint', nargs='?', default=None, help='MMDetection-format checkpoint (.pth)'
    )
    parser.add_argument(
        '--checkpoint',
        dest='checkpoint_flag',
        metavar='CHECKPOINT',
        default=None,
        help='the checkpoint, as a flag (instead of the positional argument)',
    )
    parser.add_argument('--output-file', default='tmp.onnx', help='ONNX file to write')
    parser.add_argument(
        '--input-img', default=str(DEMO_IMAGE), help='image used for tracing and verification'
    )
    parser.add_argument(
        '--test-img',
        default=None,
        help='second verification image (default: a resized crop of --input-img)',
    )
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=None,
        metavar='H [W]',
        help='static input shape (ignored with --dynamic-export); default: the '
        "config's resize scale, padded",
    )
    parser.add_argument('--opset-version', type=int, default=DEFAULT_OPSET, help='ONNX opset')
    parser.add_argument(
        '--dynamic-export',
        action='store_true',
        help='dynamic batch, height, width and detection axis',
    )
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        default=None,
        help='torch.export-based (dynamo) or legacy TorchScript tracer (default: '
        f'{DEFAULT_EXPORTER}; DINO, RetinaNet, Faster R-CNN: torchscript, their dynamo export '
        'takes two to five times longer)',
    )
    parser.add_argument('--device', default='cpu', help='device for tracing (cpu, cuda:0)')
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help='fp16: feature extractor in FP16, box decoding / NMS / RoI and mask heads in FP32, '
        'float32 inputs and outputs',
    )
    parser.add_argument(
        '--show',
        action='store_true',
        help="show the exporter's messages and warnings (not the traced graph); with --verify "
        'also draw PyTorch and ONNX Runtime detections of --input-img next to the output file',
    )
    parser.add_argument(
        '--verify',
        action='store_true',
        help='check the model and compare ONNX Runtime with PyTorch',
    )
    parser.add_argument(
        '--verify-backends',
        nargs='+',
        default=('onnxruntime',),
        metavar='BACKEND',
        help='engines to verify on, one table each: onnxruntime (always), openvino, openvino:bf16',
    )
    parser.add_argument(
        '--preprocess-in-graph',
        action='store_true',
        help='the graph takes decoded images (uint8 BGR [B, H, W, 3], any size), resizes, '
        'normalises and pads them itself, and returns boxes in image pixels',
    )
    parser.add_argument('--simplify', action='store_true', help='simplify with onnxsim')
    parser.add_argument(
        '--skip-postprocess',
        action='store_true',
        help='export raw head outputs only (no decode / NMS)',
    )
    add_checkpoint_arguments(parser)
    for old in ('--dataset', '--mean', '--std'):
        parser.add_argument(old, nargs='*', help=argparse.SUPPRESS)
    add_cfg_options_argument(parser)
    args = parser.parse_args(argv)
    if tuple(args.verify_backends) != ('onnxruntime',) and not args.verify:
        parser.error('--verify-backends needs --verify')
    if args.checkpoint and args.checkpoint_flag and args.checkpoint != args.checkpoint_flag:
        parser.error('give the checkpoint once: positional or --checkpoint')
    args.checkpoint = args.checkpoint or args.checkpoint_flag
    return args


def export_options(args: argparse.Namespace):
    """The job's options from the parsed command line (their cheap checks run here)."""
    from deploy.apis.export import ExportOptions

    return ExportOptions(
        input_img=args.input_img,
        test_img=args.test_img,
        shape=args.shape,
        opset_version=args.opset_version,
        cfg_options=args.cfg_options,
        dynamic=args.dynamic_export,
        exporter=args.exporter,
        simplify=args.simplify,
        skip_postprocess=args.skip_postprocess,
        verify=args.verify,
        device=args.device,
        strict=not args.allow_key_mismatch,
        show=args.show,
        precision=args.precision,
        preprocess_in_graph=args.preprocess_in_graph,
        verify_backends=tuple(args.verify_backends),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.checkpoint is None:
        raise ConfigError(
            'no checkpoint: give one (positional or --checkpoint); '
            'tools/misc/random_checkpoint.py makes random weights for a test'
        )
    if args.dataset or args.mean or args.std:
        print('warning: --dataset/--mean/--std are ignored: normalisation comes from the config')
    from deploy.apis.export import Exporter

    options = export_options(args)
    result = Exporter(args.config, args.checkpoint, args.output_file, options).run()
    if args.verify:
        if not result.verified:
            print('verification FAILED', file=sys.stderr)
            return 1
        print('verification passed')
    return 0


if __name__ == '__main__':
    run_cli(main)
