"""The ``--backend triton`` flags of the tools that run a model (``tools/test.py``)."""

from __future__ import annotations

import argparse
import os

from ..backends.triton import PROTOCOLS, TritonOptions

DEFAULT_URL = '127.0.0.1:8000'


def add_triton_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('a model served by Triton (--backend triton)')
    group.add_argument(
        '--url',
        default=None,
        help=f'host:port of the HTTP or gRPC endpoint (default {DEFAULT_URL}); several, comma '
        'separated: distributed rank r uses the (r mod n)-th (tools/dist_test.sh)',
    )
    group.add_argument('--model-name', default=None, help='the model name on the server')
    group.add_argument('--protocol', choices=PROTOCOLS, default='http', help='client protocol')
    group.add_argument(
        '--concurrency', type=int, default=1, help='requests in flight (one image each)'
    )


def triton_options(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> TritonOptions | None:
    """The options of ``--backend triton`` (None for a local backend); a flag that does not fit
    the backend is a usage error."""
    if args.backend != 'triton':
        given = [f for f, v in (('--url', args.url), ('--model-name', args.model_name)) if v]
        if args.concurrency != 1:
            given.append('--concurrency')
        if given:
            parser.error(f'{", ".join(given)}: only with --backend triton')
        if args.model is None:
            parser.error(f'--backend {args.backend} needs the model file')
        return None
    if args.model is not None and args.model_name:
        parser.error('--backend triton: give the served model once (MODEL or --model-name)')
    name = args.model_name or args.model
    if not name:
        parser.error('--backend triton needs --model-name (the model name on the server)')
    if '/' in name or name.endswith(('.onnx', '.engine', '.pth')):
        parser.error(f'--backend triton runs a served model: {name} looks like a file')
    if args.concurrency < 1:
        parser.error(f'--concurrency must be at least 1, got {args.concurrency}')
    if args.batch_size != 1:
        parser.error(
            '--backend triton sends one image per request and the server batches them: use '
            '--concurrency instead of --batch-size'
        )
    urls = (args.url or DEFAULT_URL).split(',')
    rank = int(os.environ.get('RANK', '0'))  # set by torchrun for each process
    options = TritonOptions(
        url=urls[rank % len(urls)],
        model_name=name,
        protocol=args.protocol,
        concurrency=args.concurrency,
    )
    # what the run names as its model (messages, the metrics record)
    args.model = f'{options.protocol}://{options.url}/{options.model_name}'
    return options
