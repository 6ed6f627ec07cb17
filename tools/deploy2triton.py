"""Write a Triton model repository for an exported model file.

    python tools/deploy2triton.py model.onnx --repository work_dirs/triton --backend python
    python tools/deploy2triton.py model.onnx --repository REPO --backend onnxruntime --device gpu
    python tools/deploy2triton.py model.engine --repository REPO --backend tensorrt

Backends: the native onnxruntime, openvino and tensorrt ones, and python (the file run by this
project's backend classes inside the server: what the Triton server of the nvidia-pytriton wheel
runs). The model folder is written under a temporary name and renamed when its config.pbtxt
parses with Triton's protobuf and matches the model file.
"""

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.serving.repository import PYTHON_RUNTIMES, TRITON_BACKENDS, RepositoryOptions


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='.onnx file (or .engine for --backend tensorrt)')
    parser.add_argument('--repository', required=True, help='model repository folder')
    parser.add_argument('--backend', choices=TRITON_BACKENDS, default='python')
    parser.add_argument('--model-name', default=None, help='default: the file name')
    parser.add_argument(
        '--max-batch-size', type=int, default=None, help='default 8 (1 for a static batch)'
    )
    parser.add_argument(
        '--no-dynamic-batching', action='store_true', help='one request per model call'
    )
    parser.add_argument(
        '--preferred-batch-sizes', type=int, nargs='+', default=(), help='default: 2, 4, 8, ...'
    )
    parser.add_argument('--queue-delay-us', type=int, default=2000, help='batching wait')
    parser.add_argument('--instances', type=int, default=1, help='model instances')
    parser.add_argument('--device', choices=('cpu', 'gpu'), default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='per instance (0: all cores)')
    parser.add_argument(
        '--runtime', choices=PYTHON_RUNTIMES, default='onnxruntime', help='python backend only'
    )
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    args = parser.parse_args(argv)
    for flag, value in (('--instances', args.instances), ('--queue-delay-us', args.queue_delay_us)):
        if value < (1 if flag == '--instances' else 0):
            parser.error(f'{flag} must be {"positive" if flag == "--instances" else ">= 0"}')
    if args.threads < 0 or any(size < 1 for size in args.preferred_batch_sizes):
        parser.error('--threads must be >= 0 and --preferred-batch-sizes positive')
    return args


def main(argv=None) -> int:
    from deploy.serving.repository import write_repository

    args = parse_args(argv)
    options = RepositoryOptions(
        backend=args.backend,
        model_name=args.model_name,
        max_batch_size=args.max_batch_size,
        dynamic_batching=not args.no_dynamic_batching,
        preferred_batch_sizes=tuple(args.preferred_batch_sizes),
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
        device=args.device,
        threads=args.threads,
        runtime=args.runtime,
    )
    folder = write_repository(args.model, args.repository, options, overwrite=args.overwrite)
    print(f'model {folder.name!r} ({args.backend} backend) written to {folder}')
    return 0


if __name__ == '__main__':
    run_cli(main)
