"""Bounded load on a Triton-served model: throughput and p50/p90/p99 latency per concurrency.

    # a running server (tools/triton_server.py), one or more of its models
    python tools/triton_load.py --url 127.0.0.1:8000 --model-name retinanet retinanet_nobatch
    # or serve an exported file on the local server, with and without dynamic batching
    python tools/triton_load.py --serve work_dirs/retinanet.onnx --concurrency 1 2 4 8

Each level runs for at most --seconds and --max-requests; clients talk to the given address only.
"""

import json

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.backends.triton import PROTOCOLS


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model-name', nargs='+', help='models of the server at --url')
    source.add_argument('--serve', metavar='MODEL.onnx', help='serve this file on the local server')
    parser.add_argument('--url', default='127.0.0.1:8000', help='with --model-name')
    parser.add_argument('--protocol', choices=PROTOCOLS, default='http')
    parser.add_argument('--concurrency', type=int, nargs='+', default=[1, 2, 4, 8])
    parser.add_argument('--seconds', type=float, default=10.0, help='longest time per level')
    parser.add_argument('--max-requests', type=int, default=2000, help='most requests per level')
    parser.add_argument('--image', default='demo/demo.jpg', help='the image every request sends')
    parser.add_argument('--threads', type=int, default=0, help='--serve: threads per instance')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from deploy.apis.checks import check_input_file, check_output_file
    from deploy.fileio import write_atomic
    from deploy.serving.load import LoadOptions, run_load, serve_and_load, table

    args = parse_args(argv)
    check_input_file(args.image, '--image')
    check_output_file(args.json, '--json')
    options = LoadOptions(tuple(args.concurrency), args.seconds, args.max_requests)
    if args.serve:
        check_input_file(args.serve, '--serve')
        results = serve_and_load(args.serve, args.image, options, threads=args.threads)
    else:
        results = run_load(args.url, args.model_name, args.image, options, args.protocol)
    print(table(results))
    if args.json:
        write_atomic(args.json, json.dumps([r.as_dict() for r in results], indent=2) + '\n')
        print(f'results written to {args.json}')
    return 0


if __name__ == '__main__':
    run_cli(main)
