"""Deploy a model in one command: export (verified), quantise, convert, compare, report.

    python tools/deploy_model.py CONFIG CHECKPOINT --backend openvino --precision int8 \\
        --work-dir work_dirs/deploy

Writes into WORK_DIR the files the backend runs (model.onnx; model.int8.onnx for INT8; OpenVINO's
model.xml / model.bin; TensorRT's model.engine), comparison.png (PyTorch | backend on the first
image), report.md and report.json. The folder is written under a temporary name and appears only
when every step passed; an earlier deploy's folder is replaced.
"""

from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument
from deploy.export.options import DEFAULT_EXPORTER, EXPORTERS

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'demo' / 'demo.jpg'
BACKENDS = ('onnxruntime', 'openvino', 'tensorrt')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='MMDetection-format checkpoint (.pth)')
    parser.add_argument('--backend', choices=BACKENDS, required=True, help='the target runtime')
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default='fp32',
        help='onnxruntime: fp32, fp16, int8; openvino: fp32, bf16, int8; tensorrt: fp32, fp16',
    )
    parser.add_argument('--work-dir', required=True, help='the folder to write')
    parser.add_argument(
        '--images',
        nargs='+',
        default=[str(DEMO_IMAGE)],
        help='comparison images (the first traces the export and is drawn)',
    )
    parser.add_argument('--exporter', choices=EXPORTERS, default=DEFAULT_EXPORTER)
    parser.add_argument('--calib-images', type=int, default=32, help='INT8 calibration images')
    parser.add_argument(
        '--check-images', type=int, default=8, help='INT8: images checked against FP32'
    )
    parser.add_argument(
        '--min-parity-ap',
        type=float,
        default=None,
        help='AP against PyTorch the artefact must reach (default: 0.98 fp32, 0.9 fp16/bf16, '
        '0.7 int8)',
    )
    parser.add_argument('--score-thr', type=float, default=0.3, help='drawn detections score above')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.deployment import DeployOptions, deploy_model

    options = DeployOptions(
        backend=args.backend,
        images=tuple(args.images),
        precision=args.precision,
        exporter=args.exporter,
        cfg_options=args.cfg_options,
        calib_images=args.calib_images,
        check_images=args.check_images,
        score_thr=args.score_thr,
        min_parity_ap=args.min_parity_ap,
    )
    deploy_model(args.config, args.checkpoint, args.work_dir, options)
    return 0


if __name__ == '__main__':
    run_cli(main)
