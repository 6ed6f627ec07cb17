"""Train a detector (or an image classifier) from scratch on its config's training set.

    python tools/train.py CONFIG --work-dir DIR [--epochs N] [--resume CKPT] [--seed S]
                          [--out CKPT] [--cfg-options k=v ...]

Writes ``epoch_{n}.pth`` and ``latest.pth`` (MMDetection layout plus ``optimizer``, for
``--resume``) and ``train.log`` into ``--work-dir``; ``--out`` also writes the final weights
without the optimiser state (the file to ship). The optimiser, LR schedule and epoch count come
from the config's ``optimizer``, ``optimizer_config``, ``lr_config`` and ``runner`` keys (see
``deploy/training/optim.py``).
"""

import argparse

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument


def parse_args(argv=None):
    parser = ArgumentParser(description='Train a detector or classifier from scratch')
    parser.add_argument('config', help='model config (its training set is used)')
    parser.add_argument('--work-dir', required=True, help='folder for checkpoints and the log')
    parser.add_argument(
        '--epochs',
        type=int,
        default=None,
        help="stop after this many epochs (default: the config's runner)",
    )
    parser.add_argument('--resume', default=None, help='checkpoint of this run to continue from')
    parser.add_argument('--seed', type=int, default=0, help='seed of weights, order and flips')
    parser.add_argument(
        '--out', default=None, help='also write the final weights (no optimizer state) here'
    )
    parser.add_argument(
        '--workers', type=int, default=None, help="data-loading processes (default: the config's)"
    )
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def train_options(args: argparse.Namespace):
    """The job's options from the parsed command line (their cheap checks run here)."""
    from deploy.training.engine import TrainOptions

    return TrainOptions(
        work_dir=args.work_dir,
        epochs=args.epochs,
        resume=args.resume,
        seed=args.seed,
        num_workers=args.workers,
        progress=not args.no_progress,
        threads=args.threads,
        out=args.out,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    options = train_options(args)
    import torch

    from deploy.config import load_config
    from deploy.models.checkpoint import save_checkpoint
    from deploy.training.engine import config_text
    from deploy.training.loop import run_training

    if options.threads:
        torch.set_num_threads(options.threads)
    cfg = load_config(args.config, args.cfg_options)
    result = run_training(cfg, options)
    print(f'trained in {result.seconds:.0f} s; last checkpoint {result.checkpoint}')
    if options.out:
        epochs = len(result.epoch_losses)
        save_checkpoint(
            result.model,
            options.out,
            meta=dict(
                CLASSES=result.class_names, epoch=epochs, seed=options.seed, config=config_text(cfg)
            ),
        )
        print(f'weights written to {options.out}')
    return 0


if __name__ == '__main__':
    run_cli(main)
