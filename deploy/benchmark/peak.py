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
