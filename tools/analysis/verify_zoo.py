"""Export and verify every shipped model config with random weights: the zoo-wide check of
``tools/pytorch2onnx.py --dynamic-export --verify`` (both exporters, both RoI modes).

    python tools/analysis/verify_zoo.py --work-dir work_dirs/verify_zoo
    python tools/analysis/verify_zoo.py --models faster_rcnn --exporters torchscript

Each model gets a random-weight checkpoint that detects something
(``tools/misc/random_checkpoint.py``), then one ``pytorch2onnx.py`` run per exporter (and per RoI
mode for two-stage models), each in a fresh process. ``--test-scale W H`` shrinks the keep-ratio
test scale of the R50 models to save time (SSD, YOLOv3 and CornerNet keep their sizes). Writes
``summary.md`` / ``summary.json`` and exits 1 when any run fails.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from deploy.apis.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[2]


YOLOX_SIZES = ('tiny', 's', 'm', 'l', 'x')
MODELS = {
    'retinanet': 'configs/retinanet/retinanet_r50_fpn_1x_coco.py',
    'fcos': 'configs/fcos/fcos_r50_caffe_fpn_gn-head_4x4_1x_coco.py',
    'fsaf': 'configs/fsaf/fsaf_r50_fpn_1x_coco.py',
    'ssd': 'configs/ssd/ssd300_coco.py',
    'yolo': 'configs/yolo/yolov3_d53_mstrain-608_273e_coco.py',
    'faster_rcnn': 'configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn': 'configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn': 'configs/cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py',
    'cascade_mask_rcnn': 'configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.py',
    'mobilenet_v2': 'configs/mobilenet_v2/mobilenet_v2_b32x8_imagenet.py',
    'detr': 'configs/detr/detr_r50_8x2_150e_coco.py',
    'dino': 'configs/dino/dino-4scale_r50_8xb2-12e_coco.py',
    'cornernet': 'configs/cornernet/cornernet_hourglass104_mstest_10x5_210e_coco.py',
    **{f'yolox_{s}': f'configs/yolox/yolox_{s}_8xb8-300e_coco.py' for s in YOLOX_SIZES},
    'yolox_s_2x': 'configs/yolox/yolox_s_8x8_300e_coco.py',
    'rtmdet_tiny': 'configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
    'rtmdet_ins_tiny': 'configs/rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py',
}
TWO_STAGE = {'faster_rcnn', 'mask_rcnn', 'cascade_rcnn', 'cascade_mask_rcnn'}
# own sizes (the classifier: resize + crop; CornerNet: each image at its own size)
FIXED_SCALE = {'ssd', 'yolo', 'mobilenet_v2', 'cornernet', 'yolox_s_2x'} | {
    f'yolox_{s}' for s in YOLOX_SIZES
}


def parse_args(argv=None):
    parser = ArgumentParser(description='Export + verify every shipped model')
    parser.add_argument('--work-dir', default='work_dirs/verify_zoo')
    parser.add_argument('--models', nargs='+', choices=tuple(MODELS), default=tuple(MODELS))
    parser.add_argument(
        '--exporters',
        nargs='+',
        choices=('dynamo', 'torchscript'),
        default=('dynamo', 'torchscript'),
    )
    parser.add_argument(
        '--roi-modes', nargs='+', choices=('masked', 'nonzero'), default=('masked', 'nonzero')
    )
    parser.add_argument(
        '--test-scale',
        type=int,
        nargs=2,
        metavar=('W', 'H'),
        default=None,
        help="keep-ratio test scale of the R50 models (default: the config's 1333x800)",
    )
    return parser.parse_args(argv)


def _run(cmd, log_file: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log_file, 'w') as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    return code, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        config = str(ROOT / MODELS[name])
        options = []
        if args.test_scale and name not in FIXED_SCALE:
            options.append(
                f'data.test.pipeline.1.img_scale=({args.test_scale[0]},{args.test_scale[1]})'
            )
        ckpt = work_dir / f'{name}_random.pth'
        code, _ = _run(
            [sys.executable, 'tools/misc/random_checkpoint.py', config, str(ckpt)],
            work_dir / f'{name}_ckpt.log',
        )
        if code:
            rows.append(dict(model=name, exporter='-', roi_mode='-', passed=False, seconds=0.0))
            continue
        modes = args.roi_modes if name in TWO_STAGE else ('-',)
        for mode in modes:
            mode_options = list(options)
            if mode != '-':
                mode_options += [
                    f'model.roi_head.bbox_roi_extractor.deploy_mode={mode}',
                ]
                if 'mask' in name:
                    mode_options.append(f'model.roi_head.mask_roi_extractor.deploy_mode={mode}')
            for exporter in args.exporters:
                tag = f'{name}_{exporter}' + ('' if mode == '-' else f'_{mode}')
                cmd = [
                    sys.executable,
                    'tools/pytorch2onnx.py',
                    config,
                    str(ckpt),
                    '--output-file',
                    str(work_dir / f'{tag}.onnx'),
                    '--dynamic-export',
                    '--verify',
                    '--exporter',
                    exporter,
                ]
                if mode_options:
                    cmd += ['--cfg-options', *mode_options]
                code, seconds = _run(cmd, work_dir / f'{tag}.log')
                rows.append(
                    dict(
                        model=name,
                        exporter=exporter,
                        roi_mode=mode,
                        passed=code == 0,
                        seconds=round(seconds, 1),
                        log=str(work_dir / f'{tag}.log'),
                    )
                )
                print(f'{tag}: {"PASS" if code == 0 else "FAIL"} ({seconds:.0f} s)', flush=True)
    lines = ['| model | exporter | RoI mode | verify | time (s) |', '|---|---|---|---|---|']
    lines += [
        f'| {r["model"]} | {r["exporter"]} | {r["roi_mode"]} | '
        f'{"PASS" if r["passed"] else "FAIL"} | {r["seconds"]} |'
        for r in rows
    ]
    (work_dir / 'summary.md').write_text('\n'.join(lines) + '\n')
    (work_dir / 'summary.json').write_text(json.dumps(rows, indent=2) + '\n')
    print('\n'.join(lines))
    return 0 if all(r['passed'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
