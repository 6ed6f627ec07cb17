"""Serve a model repository with the local Triton server (loopback only) until Ctrl-C.

    python tools/triton_server.py work_dirs/triton --http-port 8000 --grpc-port 8001

The server is the one of the nvidia-pytriton wheel in its own environment: make it once with
tools/serving/make_triton_env.sh. --timeout stops it after that many seconds.
"""

import signal
import sys
import threading
import time

from deploy.apis.cli import ArgumentParser, run_cli


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('repository', help='model repository (tools/deploy2triton.py)')
    parser.add_argument('--http-port', type=int, default=8000)
    parser.add_argument('--grpc-port', type=int, default=8001)
    parser.add_argument('--timeout', type=float, default=None, help='stop after this many seconds')
    args = parser.parse_args(argv)
    for flag, port in (('--http-port', args.http_port), ('--grpc-port', args.grpc_port)):
        if not 0 < port < 65536:
            parser.error(f'{flag} must be a port number, got {port}')
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f'--timeout must be positive, got {args.timeout}')
    return args


def main(argv=None) -> int:
    from deploy.serving.server import LocalServer

    args = parse_args(argv)
    stop = threading.Event()  # SIGTERM is the normal way to stop it (kill %1)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = LocalServer(args.repository, http_port=args.http_port, grpc_port=args.grpc_port)
    with server:
        print(
            f'serving {args.repository}: HTTP {server.http_url}, gRPC {server.grpc_url} '
            f'(log: {server.log_file}); Ctrl-C stops it',
            flush=True,
        )
        deadline = time.monotonic() + (args.timeout or float('inf'))
        while time.monotonic() < deadline and server.process.poll() is None and not stop.is_set():
            stop.wait(0.5)
    if server.process.returncode not in (0, -signal.SIGTERM):
        print(f'error: the server stopped by itself: {server.log_tail()}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    run_cli(main)
