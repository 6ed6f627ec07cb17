"""Keep an exported ONNX file as OpenVINO IR to ship: MODEL.xml and MODEL.bin, which the openvino
backend (tools/test.py, demo/image_demo.py, --backend openvino) loads directly.

    python tools/onnx2openvino.py CONFIG model.onnx --output-file shipped/model.xml

The IR keeps FP32 weights (bf16 or int8 is chosen when it is loaded, as for the ONNX file; an
INT8 file from tools/quantize.py stays INT8) and carries the model spec. It is checked before it
is renamed into place: --input-img goes through the config's pipeline into the ONNX file and the
IR on OpenVINO, and both must give the same detections.
"""

from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument
from deploy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('config', help='the config the ONNX file was exported from')
    parser.add_argument('model', help='.onnx file (tools/pytorch2onnx.py or tools/quantize.py)')
    parser.add_argument(
        '--output-file', required=True, help='the .xml to write (the .bin goes beside it)'
    )
    parser.add_argument(
        '--input-img', default=str(ROOT / 'demo' / 'demo.jpg'), help='the image of the check'
    )
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.checks import check_input_file, check_output_file
    from deploy.datasets.pipeline import load_image

    check_input_file(args.config, 'config')
    check_input_file(args.model, 'model file')
    if Path(args.model).suffix.lower() != '.onnx':
        raise ConfigError(f'{args.model}: give the .onnx file to convert')
    output = check_output_file(args.output_file, '--output-file')
    image = load_image(args.input_img)

    from deploy.backends.openvino import save_ir

    xml, binary = save_ir(args.model, output, check=lambda staged: _check(args, image, staged))
    print(f'saved {xml} and {binary}: the same detections as {args.model} on {args.input_img}')
    return 0


def _check(args, image, staged_xml: Path) -> None:
    """The staged IR and the ONNX file give the same result on ``image`` (OpenVINO, FP32)."""
    import numpy as np

    from deploy.apis.media import LoadedModel
    from deploy.errors import ExportError

    def run(model_file):
        model = LoadedModel.load(
            args.config, model_file, 'openvino', cfg_options=args.cfg_options, logger=print
        )
        return model(image)

    want, got = run(args.model), run(staged_xml)
    if hasattr(want, 'boxes'):
        if not len(want):
            raise ExportError(f'{args.model} detects nothing on {args.input_img}: nothing to check')
        same = (
            len(want) == len(got)
            and np.array_equal(want.labels, got.labels)
            and np.allclose(want.boxes, got.boxes, atol=1e-3)
            and np.allclose(want.scores, got.scores, atol=1e-5)
        )
    else:
        same = np.allclose(want.scores, got.scores, atol=1e-5)
    if not same:
        raise ExportError(f'the IR of {args.model} gives other results: nothing was written')


if __name__ == '__main__':
    run_cli(main)
