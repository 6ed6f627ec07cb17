"""Evaluate a detector (or a classifier) on the config's test set with any backend.

    python tools/test.py CONFIG model.onnx --backend onnxruntime --eval bbox
    python tools/test.py CONFIG checkpoint.pth --backend pytorch --eval bbox
    python tools/test.py CLASSIFIER_CONFIG model.onnx --backend onnxruntime --eval accuracy

Flags follow MMDetection 2.x's tools/deployment/test.py, plus --backend pytorch, --device,
--batch-size, --workers, --threads, --num-images, --pure-inference, --class-map, --eval-backend and
--launcher (distributed evaluation, see tools/dist_test.sh). The model file's settings are checked
against the config: see "Errors" in the README.
"""

import argparse
from pathlib import Path

from deploy.apis.cli import ArgumentParser, add_checkpoint_arguments, run_cli
from deploy.backends import BACKENDS, PRECISION_BACKENDS, SERVED_BACKENDS
from deploy.backends.openvino import PRECISIONS as OPENVINO_PRECISIONS
from deploy.config import add_cfg_options_argument
from deploy.errors import ConfigError
from deploy.serving.cli import add_triton_arguments, triton_options


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'config',
        help='model config (its test data set is used); leave it out to run a model file alone '
        '(MODEL --ann-file A --img-dir D): a config is Python code, a model file is not',
    )
    parser.add_argument(
        'model',
        nargs='?',
        help='checkpoint (pytorch), .onnx (onnxruntime, openvino, tensorrt) or .engine (tensorrt); '
        'with --backend triton: the served model name (or --model-name)',
    )
    parser.add_argument(
        '--backend',
        choices=BACKENDS + SERVED_BACKENDS,
        default=None,
        help='runtime to use (default: by the model file suffix)',
    )
    parser.add_argument('--ann-file', default=None, help="COCO annotation file (not the config's)")
    parser.add_argument('--img-dir', default=None, help="image folder (not the config's)")
    parser.add_argument(
        '--precision',
        choices=OPENVINO_PRECISIONS,
        default=None,
        help="openvino only: inference precision (default: the file's; int8 needs a file from "
        'tools/quantize.py)',
    )
    parser.add_argument('--out', help='pickle file for the results (.pkl / .pickle)')
    parser.add_argument(
        '--format-only',
        metavar='JSON',
        nargs='?',
        const='results.bbox.json',
        help='only write COCO-format results (results.bbox.json without a name)',
    )
    parser.add_argument(
        '--eval',
        nargs='+',
        choices=('bbox', 'segm', 'proposal', 'accuracy'),
        help='COCO metrics to compute (detectors), or top-k accuracy (classifiers)',
    )
    parser.add_argument(
        '--eval-backend',
        choices=('pycocotools', 'faster-coco-eval'),
        default='pycocotools',
        help='COCO evaluation library (same numbers)',
    )
    parser.add_argument('--work-dir', help='write the metrics to WORK_DIR/eval_<time>.json')
    parser.add_argument('--show-dir', help='draw detections into this folder')
    parser.add_argument(
        '--show-score-thr', type=float, default=0.3, help='draw detections scoring above this'
    )
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--batch-size', type=int, default=1, help='images per backend call')
    parser.add_argument('--workers', type=int, default=2, help='data loading processes')
    parser.add_argument(
        '--threads', type=int, default=None, help='inference threads (default: all cores)'
    )
    parser.add_argument(
        '--num-images', type=int, default=None, help='evaluate only the first N images'
    )
    parser.add_argument(
        '--pure-inference',
        action='store_true',
        help='after the run, time the backend alone on the same images made in memory first, '
        "and print the inference loop's share of that throughput",
    )
    parser.add_argument(
        '--class-map',
        default=None,
        metavar='name|index|FILE.json',
        help='how model classes become data-set categories when their names differ: by name, '
        'by position, or a JSON map {model class: category} (default: they must be equal)',
    )
    parser.add_argument(
        '--launcher',
        choices=('none', 'pytorch'),
        default='none',
        help='pytorch: one process per rank under torchrun (tools/dist_test.sh)',
    )
    # torch.distributed.launch passes --local_rank / --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    add_checkpoint_arguments(parser)
    add_triton_arguments(parser)
    add_cfg_options_argument(parser)
    parser.add_argument(
        '--eval-options',
        nargs='+',
        default=None,
        metavar='KEY=VALUE',
        help='extra evaluation arguments, e.g. classwise=True',
    )
    args = parser.parse_args(argv)
    # one positional on a local backend: the model file alone, no config
    if args.model is None and args.backend != 'triton':
        args.config, args.model = None, args.config
        if args.cfg_options:
            parser.error('--cfg-options needs a config; without one the model file is run as is')
    if (args.ann_file is None) != (args.img_dir is None):
        parser.error('--ann-file and --img-dir go together')
    if args.config is None and args.ann_file is None:
        parser.error('without a config, give the data set: --ann-file A --img-dir D')
    args.backend = args.backend or backend_by_suffix(args.model, parser)
    args.triton = triton_options(args, parser)
    if not (args.out or args.eval or args.format_only or args.show_dir or args.pure_inference):
        parser.error(
            'give at least one of --out, --eval, --format-only, --show-dir, --pure-inference'
        )
    if args.eval and args.format_only:
        parser.error('--eval and --format-only are exclusive')
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        parser.error('--out must end in .pkl or .pickle')
    if args.precision and args.backend not in PRECISION_BACKENDS:
        parser.error(
            f'--precision applies to --backend {" / ".join(PRECISION_BACKENDS)}; '
            f'{args.backend} runs the precision of the model file'
        )
    return args


def backend_by_suffix(model: str, parser) -> str:
    """The default backend of a model file: ``.onnx`` ONNX Runtime, ``.engine`` TensorRT,
    ``.pth`` PyTorch."""
    by_suffix = {'.onnx': 'onnxruntime', '.engine': 'tensorrt', '.pth': 'pytorch'}
    backend = by_suffix.get(Path(model).suffix)
    if backend is None:
        parser.error(f'--backend is needed for {model} (no known suffix)')
    return backend


def check_args(args) -> None:
    """Everything that can be checked before the model is loaded."""
    from deploy.apis.checks import (
        check_device,
        check_input_file,
        check_non_negative,
        check_output_dir,
        check_output_file,
        check_positive,
    )

    check_positive('--batch-size', args.batch_size, allow_none=False)
    check_non_negative('--workers', args.workers)
    check_positive('--threads', args.threads)
    check_positive('--num-images', args.num_images)
    if args.show_score_thr < 0 or args.show_score_thr > 1:
        raise ConfigError(f'--show-score-thr must be in [0, 1], got {args.show_score_thr}')
    args.device = check_device(args.device) if args.backend != 'tensorrt' else args.device
    if args.triton is None:
        check_input_file(args.model, f'{args.backend} model file')
    check_output_file(args.out, '--out')
    check_output_file(args.format_only, '--format-only')
    check_output_dir(args.show_dir, '--show-dir')
    check_output_dir(args.work_dir, '--work-dir')
    if args.ann_file is not None:
        check_input_file(args.ann_file, '--ann-file')
        if not Path(args.img_dir).is_dir():
            raise ConfigError(f'--img-dir is not a folder: {args.img_dir}')


def parse_eval_options(pairs) -> dict:
    import ast

    options = {}
    for pair in pairs or ():
        if '=' not in pair:
            raise ConfigError(f'--eval-options expects KEY=VALUE, got {pair!r}')
        key, value = pair.split('=', 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    unknown = sorted(set(options) - {'classwise', 'proposal_nums'})
    if unknown:
        raise ConfigError(f'unknown --eval-options {", ".join(unknown)} (classwise, proposal_nums)')
    return options


def options_from_args(args: argparse.Namespace, eval_options: dict):
    """The job's options from the checked command line."""
    from deploy.apis.test import TestOptions, TestSet

    return TestOptions(
        backend=args.backend,
        cfg_options=args.cfg_options,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        num_threads=args.threads,
        num_images=args.num_images,
        metrics=tuple(args.eval or ()),
        eval_options=eval_options,
        eval_backend=args.eval_backend,
        class_map=args.class_map,
        strict=not args.allow_key_mismatch,
        out=args.out,
        format_only=args.format_only,
        work_dir=args.work_dir,
        show_dir=args.show_dir,
        show_score_thr=args.show_score_thr,
        launcher=args.launcher,
        precision=args.precision,
        triton=args.triton,
        test_set=TestSet(args.ann_file, args.img_dir) if args.ann_file else None,
        pure_inference=args.pure_inference,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    eval_options = parse_eval_options(args.eval_options)
    import os

    from deploy.apis.distributed import cleanup_distributed
    from deploy.apis.test import evaluate_model

    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    try:
        evaluate_model(args.config, args.model, options_from_args(args, eval_options))
    finally:
        cleanup_distributed()
    return 0


if __name__ == '__main__':
    run_cli(main)
