"""What the CPU can do, read from ``/proc/cpuinfo``: the features that decide which integer and
bfloat16 kernels ONNX Runtime and OpenVINO pick. The benchmark records them, and the INT8
quantiser picks its weight type from them."""

from __future__ import annotations

import functools
import platform

#: CPU features that decide which integer / bfloat16 kernels the runtimes pick
ISA_FLAGS = (
    'avx2',
    'avx512f',
    'avx512_vnni',
    'avx_vnni',
    'avx512_bf16',
    'amx_tile',
    'amx_int8',
    'amx_bf16',
)


@functools.cache
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_isa() -> dict:
    """``{flag: bool}`` for :data:`ISA_FLAGS`, and ``int8_gemm``: the uint8 x int8 GEMM path ONNX
    Runtime's MLAS selects from them (AMX, else AVX512-VNNI, else AVX-VNNI, else AVX512BW/AVX2
    without VNNI)."""
    flags = _cpuinfo_flags()
    isa = {flag: flag in flags for flag in ISA_FLAGS}
    if isa['amx_int8']:
        path = 'AMX (tile) U8S8'
    elif isa['avx512_vnni']:
        path = 'AVX512-VNNI U8S8'
    elif isa['avx_vnni']:
        path = 'AVX-VNNI U8S8'
    else:
        path = 'AVX512BW/AVX2 U8S8 (no VNNI)'
    isa['int8_gemm'] = path if flags else 'unknown'
    return isa


def saturating_int8_gemm() -> bool:
    """Whether ONNX Runtime's uint8 x int8 kernels on this CPU add products in pairs into int16
    with saturation (``VPMADDUBSW``): an x86 CPU without VNNI or AMX. Unknown CPUs (no
    ``/proc/cpuinfo``) and other architectures count as not saturating."""
    if platform.machine().lower() not in ('x86_64', 'amd64', 'i686', 'x86'):
        return False
    flags = _cpuinfo_flags()
    if not flags:
        return False
    return not ({'avx512_vnni', 'avx_vnni', 'amx_int8'} & flags)
