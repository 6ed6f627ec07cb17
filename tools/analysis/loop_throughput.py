"""tools/test.py's inference loop against the backend alone, in interleaved rounds.

    python tools/analysis/loop_throughput.py CONFIG MODEL [--backend onnxruntime] --threads 2 \
        --rounds 5 [--workers 2] [--num-images N] [--json OUT]

Each round is one test run without evaluation (``tools/test.py CONFIG MODEL --pure-inference``):
the inference loop over the test images (reading, pre-processing in the loading processes,
backend calls, post-processing and encoding), then the same backend session on the same images
made in memory beforehand. The two numbers of a round are taken back to back, so a load that
comes and goes on a shared machine hits both alike; the median of the rounds' ratios is the
figure to quote, with the load averages printed beside it.
"""

import json
import os
import statistics

from deploy.apis.cli import ArgumentParser, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config (its test data set is used)')
    parser.add_argument('model', help='model file (checkpoint for --backend pytorch)')
    parser.add_argument('--backend', default=None, help='runtime (default: by the file suffix)')
    parser.add_argument('--threads', type=int, default=None, help='inference threads')
    parser.add_argument('--workers', type=int, default=2, help='data loading processes')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds')
    parser.add_argument('--num-images', type=int, default=None, help='the first N images only')
    parser.add_argument('--json', default=None, metavar='OUT', help='write the rounds as JSON')
    return parser.parse_args(argv)


def one_round(args) -> dict:
    from deploy.apis.test import TestOptions, evaluate_model

    options = TestOptions(
        backend=args.backend,
        num_threads=args.threads,
        num_workers=args.workers,
        num_images=args.num_images,
        pure_inference=True,
        progress=False,
    )
    run = evaluate_model(args.config, args.model, options, logger=lambda *a: None)
    loop, pure = run.loop_images_per_second, run.pure_images_per_second
    return dict(
        images=len(run.results),
        loop_ips=loop,
        pure_ips=pure,
        ratio=loop / pure if pure else 0.0,
        load_average=os.getloadavg(),
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backend is None:
        suffixes = {'.onnx': 'onnxruntime', '.pth': 'pytorch', '.engine': 'tensorrt'}
        args.backend = suffixes.get(os.path.splitext(args.model)[1], 'onnxruntime')
    rounds = []
    print('| round | images | loop img/s | pure img/s | loop / pure | load 1 min |')
    print('|---|---|---|---|---|---|')
    for index in range(args.rounds):
        result = one_round(args)
        rounds.append(result)
        print(
            f'| {index + 1} | {result["images"]} | {result["loop_ips"]:.1f} | '
            f'{result["pure_ips"]:.1f} | {result["ratio"]:.0%} | '
            f'{result["load_average"][0]:.1f} |',
            flush=True,
        )
    median = statistics.median(r['ratio'] for r in rounds)
    print(f'\nmedian loop / pure: {median:.0%} ({args.rounds} rounds, {os.cpu_count()} CPUs)')
    if args.json:
        from deploy.fileio import write_atomic

        summary = dict(vars(args), rounds=rounds, median_ratio=median)
        write_atomic(args.json, json.dumps(summary, indent=2).encode())
    return 0


if __name__ == '__main__':
    run_cli(main)
