"""Where does a backend file lose accuracy? Run two ONNX files of one model (FP32 and INT8, or an
export and a modified copy) on the same test images, compare every intermediate tensor both
produce, and name the layers where the error jumps.

    python tools/analysis/divergence.py CONFIG model.onnx model.int8.onnx --num-images 2 \
        --top 10 --json work_dirs/div.json --plot work_dirs/div.png

The table lists the layers that lose the most SQNR against their inputs (jump, dB), with the
relative error, cosine similarity and SQNR of their output; the plot shows SQNR along the
reference graph's depth. Tensors are compared --chunk at a time (bounded memory).
"""

import argparse
import json
import sys

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.config import add_cfg_options_argument

ENGINES = ('onnxruntime', 'openvino', 'openvino:bf16')


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description='Layer-by-layer divergence of two ONNX files')
    parser.add_argument('config', help='model config (test pipeline and test set)')
    parser.add_argument('reference', help='reference ONNX file (e.g. the FP32 export)')
    parser.add_argument('candidate', help='ONNX file to compare (e.g. its INT8 file)')
    parser.add_argument('--num-images', type=int, default=2, help='test images to run')
    parser.add_argument('--top', type=int, default=10, help='layers in the table')
    parser.add_argument('--chunk', type=int, default=32, help='tensors compared per run')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--engines',
        nargs=2,
        default=('onnxruntime', 'onnxruntime'),
        choices=ENGINES,
        metavar='ENGINE',
        help=f'reference and candidate engines ({", ".join(ENGINES)}): the same file on two '
        'engines compares the engines',
    )
    parser.add_argument(
        '--all-nodes',
        action='store_true',
        help='rank graph-level nodes (post-processing) too, not only those modules made',
    )
    parser.add_argument('--json', default=None, metavar='OUT', help='every layer, as JSON')
    parser.add_argument('--plot', default=None, metavar='OUT.png', help='SQNR along depth')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def load_inputs(config, cfg_options, num_images: int, input_names: set[str]) -> list[dict]:
    """The first ``num_images`` test images, pre-processed as the test job does."""
    from deploy.apis.export import build_pipeline
    from deploy.apis.quantize import calibration_images
    from deploy.config import load_config
    from deploy.datasets.pipeline import collate, network_inputs

    cfg = load_config(config, cfg_options)
    pipeline = build_pipeline(cfg)
    files, _ = calibration_images(cfg, 'test')
    feeds = []
    for path in files[:num_images]:
        inputs = network_inputs(*collate([pipeline(path)]))
        feeds.append({k: v for k, v in inputs.items() if k in input_names})
    return feeds


def load_onnx(path: str):
    """An ONNX file, or one line saying it is not one."""
    import onnx

    from deploy.errors import DeployError

    try:
        return onnx.load(path)
    except Exception as err:  # protobuf raises its own DecodeError, among others
        raise DeployError(f'{path} is not a readable ONNX file: {err}') from None


def format_table(layers, top) -> str:
    lines = [
        '| depth | module | op | rel. error | cosine | SQNR dB | jump dB |',
        '|---|---|---|---|---|---|---|',
    ]
    for layer in top:
        s = layer.stats
        lines.append(
            f'| {layer.depth} | {layer.module} | {layer.op} | {s.rel_error:.4f} | '
            f'{s.cosine:.5f} | {s.sqnr_db:.1f} | {layer.jump_db:.1f} |'
        )
    skipped = [layer for layer in layers if layer.stats.mismatch]
    summary = f'{len(layers) - len(skipped)} tensors compared'
    if skipped:
        reasons = sorted({layer.stats.mismatch for layer in skipped})
        summary += f'; {len(skipped)} not comparable ({"; ".join(reasons[:3])})'
    return '\n'.join(lines) + f'\n\n{summary}'


def plot(layers, top, path):
    import io

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from deploy.fileio import write_atomic

    shown = [layer for layer in layers if not layer.stats.mismatch]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot([x.depth for x in shown], [x.stats.sqnr_db for x in shown], '.-', lw=0.8)
    for k, layer in enumerate(top[:5]):  # stacked labels: the top layers often sit together
        ax.annotate(
            layer.module,
            (layer.depth, layer.stats.sqnr_db),
            textcoords='offset points',
            xytext=(8, 10 + 11 * k),
            fontsize=7,
            arrowprops=dict(arrowstyle='-', lw=0.5),
        )
        ax.scatter([layer.depth], [layer.stats.sqnr_db], color='tab:red', zorder=3)
    ax.set_xlabel('depth (tensor index in the reference graph)')
    ax.set_ylabel('SQNR of the candidate, dB (higher: closer)')
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format='png', dpi=110, bbox_inches='tight')
    finally:
        plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.apis.checks import check_input_file, check_output_file, check_positive
    from deploy.evaluation.divergence import compare_models, top_jumps
    from deploy.fileio import write_atomic

    for path, what in ((args.config, 'config'), (args.reference, 'reference'),
                       (args.candidate, 'candidate')):  # fmt: skip
        check_input_file(path, what)
    for flag in ('num_images', 'top', 'chunk'):
        check_positive(f'--{flag.replace("_", "-")}', getattr(args, flag), allow_none=False)
    check_output_file(args.json, '--json')
    check_output_file(args.plot, '--plot')
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731  (stdout carries the table)
    ref, test = load_onnx(args.reference), load_onnx(args.candidate)
    names = {i.name for i in ref.graph.input}
    feeds = load_inputs(args.config, args.cfg_options, args.num_images, names)
    layers = compare_models(ref, test, feeds, args.chunk, args.threads, log, tuple(args.engines))
    top = top_jumps(layers, args.top, modules_only=not args.all_nodes)
    print(format_table(layers, top))
    if args.json:
        report = dict(top=[x.to_dict() for x in top], layers=[x.to_dict() for x in layers])
        write_atomic(args.json, json.dumps(report, indent=2))
        log(f'report written to {args.json}')
    if args.plot:
        log(f'plot written to {plot(layers, top, args.plot)}')
    return 0


if __name__ == '__main__':
    run_cli(main)
