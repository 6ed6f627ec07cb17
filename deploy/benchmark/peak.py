"""The machine's practical FP32 peak: a large square ``torch.matmul`` at a fixed thread count.

A GEMM of ``n x n`` by ``n x n`` does ``2 n^3`` floating-point operations and is the best case of
the BLAS the backends use, so its rate is a realistic ceiling ("machine peak" from the data sheet,
cores x clock x SIMD width x 2 FMA units, is usually 10-30% higher and is never reached). The best
of ``repeats`` timed calls is reported: a peak is a best case, not a typical one.
"""

import time

import numpy as np
import torch

METHOD = 'best of {repeats} x {call} float32 {n}x{n} @ {n}x{n}'


def measure_peak_flops(
    num_threads: int | None = None,
    n: int = 2048,
    repeats: int = 5,
    warmup: int = 2,
    library: str = 'torch',
) -> dict:
    """Time square float32 matrix products.

    Args:
        num_threads: torch intra-op threads for the measurement (``None``: leave as is). numpy's
            BLAS takes its threads from ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` at import.
        n: matrix size (2048: 17 GFLOP a call, big enough to amortise threading overheads).
        library: ``'torch'`` (``torch.matmul``) or ``'numpy'`` (``np.dot``).

    Returns:
        ``dict(gflops, seconds, n, repeats, threads, library, method)``; ``gflops`` is GFLOP/s.
    """
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        gen = np.random.default_rng(0)
        a = gen.standard_normal((n, n), dtype=np.float32)
        b = gen.standard_normal((n, n), dtype=np.float32)
        if library == 'torch':
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)

            def product():
                return torch.matmul(ta, tb)
        elif library == 'numpy':

            def product():
                return np.dot(a, b)
        else:
            raise ValueError(f'library must be torch or numpy, got {library!r}')
        for _ in range(warmup):
            product()
        best = float('inf')
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    flop = 2.0 * n**3
    return dict(
        gflops=flop / best / 1e9,
        seconds=best,
        n=n,
        repeats=repeats,
        threads=threads,
        library=library,
        method=METHOD.format(
            repeats=repeats, n=n, call='np.dot' if library == 'numpy' else 'torch.matmul'
        ),
    )


INT8_METHOD = 'best of {repeats} x ONNX Runtime MatMulInteger uint8 {n}x{n} @ int8 {n}x{n}'


def measure_int8_peak(num_threads: int | None = None, n: int = 2048, repeats: int = 5) -> dict:
    """The practical INT8 peak: ONNX Runtime's integer GEMM (``MatMulInteger``, uint8 activations
    x int8 constant weights: the MLAS kernels behind ``QLinearConv`` -- AVX512-VNNI or AMX where
    the CPU has them), ``2 n^3`` integer operations a call.

    Returns ``dict(gops, seconds, n, repeats, threads, library, method)`` (``gops``: GOP/s).
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    gen = np.random.default_rng(0)
    weight = gen.integers(-127, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node('MatMulInteger', ['a', 'b'], ['y'])],
        'int8_peak',
        [helper.make_tensor_value_info('a', TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info('y', TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(weight, 'b')],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(),
        options,
        providers=['CPUExecutionProvider'],
    )
    feed = {'a': gen.integers(0, 256, (n, n), dtype=np.uint8)}
    for _ in range(2):
        session.run(None, feed)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return dict(
        gops=2.0 * n**3 / best / 1e9,
        seconds=best,
        n=n,
        repeats=repeats,
        threads=num_threads or session.get_session_options().intra_op_num_threads,
        library=f'onnxruntime {ort.__version__}',
        method=INT8_METHOD.format(repeats=repeats, n=n),
    )
