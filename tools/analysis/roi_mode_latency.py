"""ONNX Runtime latency of the two RoI-extractor export modes (masked vs nonzero), as JSON.

    python tools/analysis/roi_mode_latency.py
    python tools/analysis/roi_mode_latency.py CONFIG --checkpoint CKPT --shape 800 1344 --runs 10

Both modes are exported from the same weights (the checkpoint, or seeded random weights) with the
same exporter, then each graph runs the same input in ONNX Runtime (CPU unless --device cuda).
Runs alternate between the modes. The timed span is one ``session.run`` (inputs already in
memory, outputs back in numpy), the same for both modes. The two modes must agree: the JSON also
reports how many detections match.
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deploy.apis.cli import ArgumentParser

DEFAULT_CONFIG = (
    Path(__file__).resolve().parents[2]
    / 'configs'
    / 'faster_rcnn'
    / 'faster_rcnn_r50_fpn_1x_coco.py'
)
MODES = ('masked', 'nonzero')


def parse_args(argv=None):
    parser = ArgumentParser(description='ORT latency of masked vs nonzero RoI modes')
    parser.add_argument(
        'config',
        nargs='?',
        default=str(DEFAULT_CONFIG),
        help='two-stage model config (default: Faster R-CNN R50-FPN)',
    )
    parser.add_argument('--checkpoint', default=None, help='weights (default: random, seed 0)')
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1344), metavar=('H', 'W'))
    parser.add_argument('--exporter', choices=('dynamo', 'torchscript'), default='dynamo')
    parser.add_argument('--runs', type=int, default=10, help='timed runs per mode')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs per mode')
    parser.add_argument('--threads', type=int, default=None, help='ORT intra-op threads')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--out', default=None, help='also write the JSON here')
    parser.add_argument('--keep-dir', default=None, help='keep the exported models here')
    return parser.parse_args(argv)


def _mode_options(cfg_model, mode: str) -> dict:
    roi_head = cfg_model['roi_head']
    options = {'model.roi_head.bbox_roi_extractor.deploy_mode': mode}
    if roi_head.get('mask_roi_extractor') is not None:
        options['model.roi_head.mask_roi_extractor.deploy_mode'] = mode
    return options


def measure(args) -> dict:
    import numpy as np
    import torch

    from deploy.apis.model import init_detector
    from deploy.backends.onnxruntime import OnnxRuntimeBackend
    from deploy.config import get_model_cfg, load_config
    from deploy.evaluation.parity import match_result_lists
    from deploy.export.onnx_export import export_onnx
    from deploy.postprocess import outputs_to_results

    height, width = args.shape
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, height, width, generator=gen)
    img_shape = torch.tensor([[float(height), float(width)]])
    inputs = dict(input=img.numpy(), img_shape=img_shape.numpy())
    metas = [dict(img_shape=(height, width))]
    base_cfg = load_config(args.config)
    report = dict(
        config=str(args.config),
        checkpoint=args.checkpoint or 'random (seed 0)',
        input_shape=[1, 3, height, width],
        exporter=args.exporter,
        device=args.device,
        threads=args.threads,
        runs=args.runs,
        modes={},
    )
    outputs, backends = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for mode in MODES:
            torch.manual_seed(0)
            model, _ = init_detector(
                args.config,
                args.checkpoint,
                cfg_options=_mode_options(get_model_cfg(base_cfg), mode),
                logger=lambda *a: None,
            )
            path = work / f'{Path(args.config).stem}_{mode}.onnx'
            start = time.perf_counter()
            export_onnx(model, img, img_shape, path, exporter=args.exporter)
            report['modes'][mode] = dict(
                export_s=round(time.perf_counter() - start, 1),
                file_mb=round(path.stat().st_size / 2**20, 1),
            )
            backends[mode] = OnnxRuntimeBackend(path, device=args.device, num_threads=args.threads)
        for _ in range(args.warmup):
            for mode in MODES:
                backends[mode](inputs)
        # Runs alternate between the modes, so a load change on the machine hits both alike.
        times = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                start = time.perf_counter()
                outputs[mode] = backends[mode](inputs)
                times[mode].append(1000 * (time.perf_counter() - start))
        for mode in MODES:
            report['modes'][mode].update(
                median_ms=round(statistics.median(times[mode]), 2),
                mean_ms=round(np.mean(times[mode]), 2),
                min_ms=round(min(times[mode]), 2),
                max_ms=round(max(times[mode]), 2),
                num_detections=int((outputs[mode]['labels'][0] >= 0).sum()),
            )
    stats = match_result_lists(
        outputs_to_results(outputs['masked'], metas), outputs_to_results(outputs['nonzero'], metas)
    )
    report['modes_agree'] = dict(
        matched=stats.matched,
        masked=stats.num_ref,
        nonzero=stats.num_test,
        max_score_err=float(stats.max_score_err),
    )
    report['nonzero_over_masked'] = round(
        report['modes']['nonzero']['median_ms'] / report['modes']['masked']['median_ms'], 3
    )
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    report = measure(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
