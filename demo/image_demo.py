"""Draw a detector's results on one image, from a checkpoint, an ONNX file or a TensorRT engine.

python demo/image_demo.py demo/demo.jpg CONFIG MODEL [--backend onnxruntime] [--out-file F]
python demo/image_demo.py demo/demo.jpg CONFIG model.onnx --backend openvino --precision bf16
python demo/image_demo.py demo/demo.jpg model.onnx      # the model file alone, no config code
"""

from pathlib import Path

from deploy.apis.cli import ArgumentParser, add_checkpoint_arguments, run_cli
from deploy.backends import BACKENDS, PRECISION_BACKENDS
from deploy.backends.openvino import PRECISIONS as OPENVINO_PRECISIONS
from deploy.config import add_cfg_options_argument
from deploy.errors import ConfigError


def parse_args(argv=None):
    parser = ArgumentParser(description='Detect objects in one image and draw them')
    parser.add_argument('img', help='image file')
    parser.add_argument(
        'config', help='model config; leave it out to run a model file alone (no config code)'
    )
    parser.add_argument('model', nargs='?', help='checkpoint (.pth), .onnx or .engine')
    parser.add_argument(
        '--backend', choices=BACKENDS, default=None, help='default: from the model file suffix'
    )
    parser.add_argument(
        '--precision',
        choices=OPENVINO_PRECISIONS,
        default=None,
        help="openvino only: inference precision (default: the file's)",
    )
    parser.add_argument('--out-file', default='result.jpg', help='the picture to write')
    parser.add_argument(
        '--score-thr', type=float, default=0.3, help='draw detections scoring above this'
    )
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    add_checkpoint_arguments(parser)
    add_cfg_options_argument(parser)
    args = parser.parse_args(argv)
    if args.model is None:  # IMG MODEL: the model file's own spec, no config
        args.config, args.model = None, args.config
        if args.cfg_options:
            parser.error('--cfg-options needs a config; without one the model file is run as is')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.checks import check_device, check_image_output, check_input_file

    if not 0 <= args.score_thr <= 1:
        raise ConfigError(f'--score-thr must be in [0, 1], got {args.score_thr}')
    check_input_file(args.img, 'image')
    check_input_file(args.model, 'model file')
    check_image_output(args.out_file, '--out-file')
    backend = args.backend or {'.onnx': 'onnxruntime', '.engine': 'tensorrt'}.get(
        Path(args.model).suffix, 'pytorch'
    )
    device = check_device(args.device) if backend != 'tensorrt' else args.device
    if args.precision and backend not in PRECISION_BACKENDS:
        raise ConfigError(
            f'--precision applies to --backend {" / ".join(PRECISION_BACKENDS)}; {backend} runs '
            'the precision of the model file'
        )

    from deploy.apis.inference import inference_image
    from deploy.visualization import draw_detections, save_image

    image, result, class_names = inference_image(
        args.config,
        args.model,
        args.img,
        backend,
        cfg_options=args.cfg_options,
        device=device,
        strict=not args.allow_key_mismatch,
        precision=args.precision,
    )
    from deploy.structures import ClassificationResult

    if isinstance(result, ClassificationResult):  # a classifier: its best classes on the image
        from deploy.tasks.classification import draw_classification

        save_image(args.out_file, draw_classification(image, result, class_names))
        name = class_names[result.label] if class_names else str(result.label)
        print(f'top-1 {name} ({result.scores[result.label]:.2f}) drawn to {args.out_file}')
        return 0
    save_image(args.out_file, draw_detections(image, result, class_names, args.score_thr))
    shown = int((result.scores > args.score_thr).sum())
    print(f'{len(result)} detections ({shown} above {args.score_thr}) drawn to {args.out_file}')
    return 0


if __name__ == '__main__':
    run_cli(main)
