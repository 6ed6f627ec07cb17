"""Write an MMDetection-format checkpoint of a config's model with random weights that detect
something: a stand-in for a real checkpoint when checking an export end to end.

    python tools/misc/random_checkpoint.py configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py \
        work_dirs/mask_rcnn_random.pth
    python tools/pytorch2onnx.py configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py \
        work_dirs/mask_rcnn_random.pth --dynamic-export --verify

The classifier biases are set so scores fall around the config's ``score_thr``
(:mod:`deploy.models.random_weights`); the AP of such a model is meaningless.
"""

from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument


def parse_args(argv=None):
    parser = ArgumentParser(description='Random-weight checkpoint that detects something')
    parser.add_argument('config', help='model config')
    parser.add_argument('out', help='checkpoint (.pth) to write')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    parser.add_argument(
        '--plain', action='store_true', help='keep the random biases (detections unlikely)'
    )
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from deploy.apis.model import init_detector
    from deploy.models.checkpoint import save_checkpoint
    from deploy.models.random_weights import make_detections_likely

    torch.manual_seed(args.seed)
    model, _ = init_detector(args.config, cfg_options=args.cfg_options, logger=None)
    if not args.plain:
        make_detections_likely(model, strong=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # Configs for COCO name no classes (MMDetection takes them from the dataset): number them.
    num_classes = _num_classes(model)
    classes = tuple(model.class_names or (f'class_{i}' for i in range(num_classes)))
    save_checkpoint(model, args.out, meta={'CLASSES': classes, 'seed': args.seed})
    print(f'random-weight {type(model).__name__} written to {args.out}')
    return 0


def _num_classes(model) -> int:
    if hasattr(model, 'head'):  # a classifier
        return int(model.head.num_classes)
    head = model.roi_head.bbox_head if hasattr(model, 'roi_head') else model.bbox_head
    from torch import nn

    head = head[-1] if isinstance(head, nn.ModuleList) else head  # cascade: the last stage
    return int(head.num_classes)


if __name__ == '__main__':
    run_cli(main)
