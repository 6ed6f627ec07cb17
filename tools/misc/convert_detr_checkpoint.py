"""Convert a DETR checkpoint between MMDetection's 2.x and 3.x state-dict layouts.

    python tools/misc/convert_detr_checkpoint.py detr_3x.pth detr_2x.pth --to 2.x
    python tools/misc/convert_detr_checkpoint.py mmdet_2x_detr.pth out.pth --to 3.x

2.x keeps the transformer inside ``bbox_head`` (``bbox_head.input_proj``,
``bbox_head.transformer.{encoder,decoder}.layers.{i}.attentions.{0,1}``, ``ffns.0``); 3.x has a
``neck`` and ``encoder``/``decoder``/``query_embedding`` on the detector (``self_attn``,
``cross_attn``, ``ffn``). Checkpoints written before MMDetection 2.12 (older transformer names)
are upgraded first. The zoo loads either layout; this tool is for other consumers (MMDetection
itself) and for testing the 2.x path. ``meta`` is kept.
"""

import argparse
from pathlib import Path

from deploy.apis.cli import HelpFormatter, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('checkpoint', help='DETR checkpoint (.pth), either layout')
    parser.add_argument('out', help='checkpoint to write')
    parser.add_argument('--to', choices=('2.x', '3.x'), required=True, help='layout to write')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.errors import CheckpointError
    from deploy.models.checkpoint import load_checkpoint_file, save_checkpoint
    from deploy.models.detectors.detr_compat import detr_keys_3x_to_2x, detr_keys_any_to_3x

    checkpoint = load_checkpoint_file(args.checkpoint)
    state_dict = checkpoint['state_dict']
    if not any(k.startswith(('bbox_head.', 'encoder.', 'decoder.')) for k in state_dict):
        raise CheckpointError(f'{args.checkpoint} is not a DETR checkpoint (no DETR head keys)')
    state_dict = detr_keys_any_to_3x(state_dict)
    if args.to == '2.x':
        state_dict = detr_keys_3x_to_2x(state_dict)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state_dict, args.out, meta=checkpoint['meta'])
    print(f'{len(state_dict)} keys written to {args.out} in the MMDetection {args.to} layout')
    return 0


if __name__ == '__main__':
    run_cli(main)
