"""DETR in a padded batch against each image alone: how far MMDetection's batch semantics move an
image's detections, and that ``test_cfg.batch_invariant=True`` does not move them.

    python tools/analysis/detr_batch_vs_alone.py configs/detr/detr_r50_8x2_150e_coco.py CKPT \
        [--onnx model.onnx] [--cfg-options model.test_cfg.batch_invariant=True]

The batch is ``--input-img`` and ``--test-img`` (default: a resized crop of the first, as
``tools/pytorch2onnx.py --verify`` uses), padded together. Each image's detections in the batch
(eager PyTorch, and ONNX Runtime with ``--onnx``) are matched by IoU against PyTorch on that image
alone; the table has one row per backend.
"""

import argparse

from deploy.apis.cli import HelpFormatter, run_cli
from deploy.config import add_cfg_options_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('config', help='DETR config')
    parser.add_argument('checkpoint', help='checkpoint (.pth)')
    parser.add_argument('--onnx', help='ONNX export of the same model (dynamic batch and size)')
    parser.add_argument('--input-img', default='demo/demo.jpg', help='first image')
    parser.add_argument('--test-img', help='second image (default: a resized crop of the first)')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.export import build_pipeline, second_view
    from deploy.apis.model import init_detector
    from deploy.backends.onnxruntime import OnnxRuntimeBackend
    from deploy.backends.pytorch import PyTorchBackend
    from deploy.datasets.pipeline import collate, load_image
    from deploy.evaluation.parity import match_result_lists
    from deploy.export.verify import VerifyCase
    from deploy.postprocess import outputs_to_results

    model, cfg = init_detector(args.config, args.checkpoint, cfg_options=args.cfg_options)
    pipeline = build_pipeline(cfg)
    image = load_image(args.input_img)
    other = load_image(args.test_img) if args.test_img else second_view(image)
    samples = [pipeline(image), pipeline(other)]
    reference = PyTorchBackend(model)

    def run(backend, batch) -> list:
        case = VerifyCase('', *collate(batch))
        return outputs_to_results(backend(case.inputs()), case.metas)

    alone = [result for sample in samples for result in run(reference, [sample])]
    backends = [('pytorch', reference)]
    if args.onnx:
        backends.append(('onnxruntime', OnnxRuntimeBackend(args.onnx)))
    batch_shape = 'x'.join(map(str, collate(samples)[0].shape))
    sizes = ', '.join('x'.join(map(str, s[1]['img_shape'])) for s in samples)
    print(f'batch {batch_shape} of images {sizes}; reference: PyTorch on each image alone')
    print('backend      matched  exact   max score err  max box err (exact pairs, px)')
    for name, backend in backends:
        stats = match_result_lists(alone, run(backend, samples))
        print(
            f'{name:<12} {100 * stats.matched_fraction:5.1f}%   {100 * stats.exact_fraction:5.1f}%'
            f'  {stats.max_score_err:13.1e}  {stats.max_box_err:11.2f}'
        )
    return 0


if __name__ == '__main__':
    run_cli(main)
