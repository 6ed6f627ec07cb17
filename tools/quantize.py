"""Quantise an exported FP32 ONNX file to static INT8 (QDQ), calibrated on the config's images.

    python tools/quantize.py CONFIG model.onnx --output-file model.int8.onnx \
        [--calib-images 32] [--method minmax|entropy|percentile] [--per-channel]

ONNX Runtime's quantisation (pre-processing, then static QDQ): backbone, neck and head
convolutions (and the RoI heads' FCs / convolutions) in INT8; anchors, box decoding, TopK, NMS,
RoiAlign and mask pasting stay float. Calibration images come from the config's training set
through its test pipeline. The INT8 detections are then compared with FP32's on held-out images;
below --min-parity-ap the most sensitive layers are kept in float automatically. The file runs in
tools/test.py, tools/benchmark.py and the demo like any ONNX file (onnxruntime or openvino).
"""

import argparse
import functools
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument
from deploy.onnx_graph.int8 import CALIBRATION_METHODS, WEIGHT_CHOICES


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the FP32 file was exported from')
    parser.add_argument('model', help='FP32 .onnx file (tools/pytorch2onnx.py)')
    parser.add_argument('--output-file', required=True, help='INT8 .onnx file to write')
    parser.add_argument(
        '--calib-images', type=int, default=32, help='calibration images (activation ranges)'
    )
    parser.add_argument(
        '--calib-split',
        choices=('train', 'test'),
        default='train',
        help="the config's data set split to calibrate on (train falls back to test)",
    )
    parser.add_argument(
        '--check-images',
        type=int,
        default=8,
        help='held-out images of that split on which INT8 is compared with FP32 (0: no check)',
    )
    parser.add_argument(
        '--method', choices=CALIBRATION_METHODS, default='minmax', help='range calibration'
    )
    parser.add_argument(
        '--per-channel',
        action='store_true',
        default=True,
        help='one weight scale per output channel (default)',
    )
    parser.add_argument(
        '--per-tensor',
        dest='per_channel',
        action='store_false',
        help='one weight scale per tensor instead',
    )
    parser.add_argument(
        '--weights',
        choices=WEIGHT_CHOICES,
        default='auto',
        help='weight type: int8 (fastest on VNNI / AMX CPUs; OpenVINO runs only these in INT8) '
        'or uint8 (no int16 saturation in ONNX Runtime on x86 CPUs without VNNI); auto picks '
        'uint8 on such a CPU, else int8',
    )
    parser.add_argument(
        '--reduce-range',
        action='store_true',
        help='7-bit weights: for ONNX Runtime on CPUs without VNNI (AVX2 only), whose integer '
        'kernels can saturate with 8-bit weights',
    )
    parser.add_argument(
        '--float-roi-heads',
        action='store_true',
        help='two-stage models: keep the RoI heads (box FCs, mask convolutions) in float',
    )
    parser.add_argument(
        '--exclude',
        nargs='+',
        default=(),
        metavar='NODE',
        help='node names to keep in float (as listed by a previous run)',
    )
    parser.add_argument(
        '--min-parity-ap',
        type=float,
        default=None,
        help='INT8 detections scored against FP32 must reach this AP; below it the most '
        'sensitive layers are kept in float (default 0.7)',
    )
    parser.add_argument(
        '--max-float-layers',
        type=int,
        default=8,
        help='at most this many layers kept in float by the sensitivity search',
    )
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='with --verify: the checkpoint the FP32 file was exported from',
    )
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare the INT8 file with eager PyTorch (needs --checkpoint), as the export does',
    )
    parser.add_argument(
        '--verify-backends',
        nargs='+',
        choices=('onnxruntime', 'openvino'),
        default=('onnxruntime',),
        help='with --verify: engines to run the INT8 file on',
    )
    parser.add_argument(
        '--input-img',
        default=str(Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'),
        help='with --verify: the verification image',
    )
    add_cfg_options_argument(parser)
    args = parser.parse_args(argv)
    if args.verify and not args.checkpoint:
        parser.error('--verify needs --checkpoint (the weights the FP32 file came from)')
    if args.min_parity_ap is not None and not 0 <= args.min_parity_ap <= 1:
        parser.error(f'--min-parity-ap must be in [0, 1], got {args.min_parity_ap}')
    if args.max_float_layers < 0:
        parser.error(f'--max-float-layers must be at least 0, got {args.max_float_layers}')
    return args


def quantize_options(args: argparse.Namespace):
    """The job's options from the parsed command line (their cheap checks run here)."""
    from deploy.apis.quantize import DEFAULT_MIN_PARITY_AP, QuantizeOptions

    min_parity_ap = args.min_parity_ap
    return QuantizeOptions(
        calib_images=args.calib_images,
        check_images=args.check_images,
        method=args.method,
        per_channel=args.per_channel,
        weights=args.weights,
        reduce_range=args.reduce_range,
        roi_heads=not args.float_roi_heads,
        calib_split=args.calib_split,
        exclude=tuple(args.exclude),
        min_parity_ap=DEFAULT_MIN_PARITY_AP if min_parity_ap is None else min_parity_ap,
        max_float_layers=args.max_float_layers,
        cfg_options=args.cfg_options,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.checks import check_input_file, check_output_file, check_positive
    from deploy.apis.quantize import Quantizer

    check_input_file(args.config, 'config')
    check_input_file(args.model, 'ONNX file')
    check_output_file(args.output_file, '--output-file')
    check_positive('--calib-images', args.calib_images, allow_none=False)
    verify = None
    if args.verify:  # an unreadable checkpoint is found before minutes of quantising
        from deploy.models.checkpoint import load_checkpoint_file

        load_checkpoint_file(args.checkpoint)
        verify = functools.partial(verify_file, args)
    options = quantize_options(args)
    result = Quantizer(args.config, args.model, args.output_file, options, verify=verify).run()
    ok = result.passed or not args.check_images
    if not result.verified:
        print(f'{args.output_file} was not replaced; the unverified file is {result.output_file}')
    return 0 if ok and result.verified else 1


def verify_file(args, path) -> bool:
    """``--verify`` of the INT8 file at ``path`` (its temporary name, before it replaces
    ``--output-file``)."""
    from deploy.apis.quantize import verify_quantized

    tables = verify_quantized(
        args.config,
        args.checkpoint,
        path,
        input_img=args.input_img,
        backends=tuple(args.verify_backends),
        cfg_options=args.cfg_options,
    )
    verified = bool(tables) and all(r.passed for rows in tables.values() for r in rows)
    if not tables:
        print('nothing verified: no engine of --verify-backends runs this file in INT8 here')
    print('verification passed' if verified else 'verification FAILED')
    return verified


if __name__ == '__main__':
    run_cli(main)
