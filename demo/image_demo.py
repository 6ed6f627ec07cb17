"""Draw a detector's results on an image, a folder of images or a video, from a checkpoint, an
ONNX file, an OpenVINO IR (.xml) or a TensorRT engine; the model is loaded once.

python demo/image_demo.py demo/demo.jpg CONFIG MODEL [--backend onnxruntime] [--out-file F]
python demo/image_demo.py demo/demo.jpg CONFIG model.onnx --backend openvino --precision bf16
python demo/image_demo.py demo/demo.jpg model.onnx      # the model file alone, no config code
python demo/image_demo.py photos/ CONFIG model.onnx --out-dir drawn/
python demo/image_demo.py clip.mp4 CONFIG model.onnx --out-file drawn.mp4
"""

from pathlib import Path

from deploy.apis.cli import ArgumentParser, add_checkpoint_arguments, run_cli
from deploy.apis.media import VIDEO_CODECS, is_video
from deploy.backends import BACKENDS, PRECISION_BACKENDS
from deploy.backends.openvino import PRECISIONS as OPENVINO_PRECISIONS
from deploy.config import add_cfg_options_argument
from deploy.errors import ConfigError

#: the backend a model file's suffix implies
SUFFIX_BACKENDS = {'.onnx': 'onnxruntime', '.xml': 'openvino', '.engine': 'tensorrt'}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument(
        'img', help=f'image file, folder of images, or video ({", ".join(VIDEO_CODECS)})'
    )
    parser.add_argument(
        'config', help='model config; leave it out to run a model file alone (no config code)'
    )
    parser.add_argument('model', nargs='?', help='checkpoint (.pth), .onnx, .xml or .engine')
    parser.add_argument(
        '--backend',
        choices=BACKENDS,
        default=None,
        help='default: from the model file suffix (.onnx, .xml: openvino, .engine)',
    )
    parser.add_argument(
        '--precision',
        choices=OPENVINO_PRECISIONS,
        default=None,
        help="openvino only: inference precision (default: the file's)",
    )
    parser.add_argument(
        '--out-file',
        default=None,
        help='the picture to write, or for a video the video (default: result.jpg / result.mp4)',
    )
    parser.add_argument(
        '--out-dir', default='result', help='for a folder of images: where to draw them'
    )
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
    from deploy.apis.checks import check_device, check_input_file

    if not 0 <= args.score_thr <= 1:
        raise ConfigError(f'--score-thr must be in [0, 1], got {args.score_thr}')
    kind = _check_source(args)
    check_input_file(args.model, 'model file')
    backend = args.backend or SUFFIX_BACKENDS.get(Path(args.model).suffix, 'pytorch')
    device = check_device(args.device) if backend != 'tensorrt' else args.device
    if args.precision and backend not in PRECISION_BACKENDS:
        raise ConfigError(
            f'--precision applies to --backend {" / ".join(PRECISION_BACKENDS)}; {backend} runs '
            'the precision of the model file'
        )
    from deploy.apis.media import LoadedModel
    from deploy.datasets.pipeline import load_image

    # A bad picture is reported before the model is loaded.
    image = load_image(args.img) if kind == 'image' else None
    model = LoadedModel.load(
        args.config,
        args.model,
        backend,
        cfg_options=args.cfg_options,
        device=device,
        strict=not args.allow_key_mismatch,
        precision=args.precision,
    )
    if image is not None:
        return _one_image(args, model, image)
    return {'folder': _folder, 'video': _video}[kind](args, model)


def _check_source(args) -> str:
    """What ``img`` is (image, folder, video), with its output checked before a model loads."""
    from deploy.apis.checks import (
        check_image_output,
        check_input_file,
        check_output_dir,
        check_output_file,
    )
    from deploy.apis.media import folder_images

    source = Path(args.img)
    if source.is_dir():
        folder_images(source)
        if args.out_file:
            raise ConfigError('--out-file names one picture or video; a folder goes to --out-dir')
        check_output_dir(args.out_dir, '--out-dir')
        return 'folder'
    check_input_file(source, 'image or video')
    if is_video(source):
        args.out_file = args.out_file or 'result.mp4'
        if not is_video(args.out_file):
            raise ConfigError(
                f'--out-file {args.out_file}: a video is drawn into a video '
                f'({", ".join(VIDEO_CODECS)})'
            )
        check_output_file(args.out_file, '--out-file')
        return 'video'
    args.out_file = args.out_file or 'result.jpg'
    check_image_output(args.out_file, '--out-file')
    return 'image'


def _drawer(args, model):
    """What draws a result on its image: detections above the threshold, or a classifier's
    best classes."""
    from deploy.structures import ClassificationResult
    from deploy.tasks.classification import draw_classification
    from deploy.visualization import draw_detections

    def draw(image, result):
        if isinstance(result, ClassificationResult):
            return draw_classification(image, result, model.class_names)
        return draw_detections(image, result, model.class_names, args.score_thr)

    return draw


def _one_image(args, model, image) -> int:
    from deploy.structures import ClassificationResult
    from deploy.visualization import save_image

    result = model(image)
    save_image(args.out_file, _drawer(args, model)(image, result))
    if isinstance(result, ClassificationResult):
        names = model.class_names
        name = names[result.label] if names else str(result.label)
        print(f'top-1 {name} ({result.scores[result.label]:.2f}) drawn to {args.out_file}')
        return 0
    shown = int((result.scores > args.score_thr).sum())
    print(f'{len(result)} detections ({shown} above {args.score_thr}) drawn to {args.out_file}')
    return 0


def _folder(args, model) -> int:
    from deploy.apis.media import draw_folder

    done = draw_folder(args.img, args.out_dir, model, _drawer(args, model))
    print(f'{len(done)} images drawn into {args.out_dir}')
    return 0


def _video(args, model) -> int:
    from deploy.apis.media import draw_video

    summary = draw_video(args.img, args.out_file, model, _drawer(args, model))
    width, height = summary.size
    print(
        f'{summary.frames} frames ({width}x{height}, {summary.fps:g} fps) drawn to {args.out_file}'
    )
    return 0


if __name__ == '__main__':
    run_cli(main)
