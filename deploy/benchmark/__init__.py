"""Honest benchmarks: the same pre/infer/post span for every backend, fixed threads, peak RSS per
backend in a fresh process, FLOPs and the fraction of the machine's FP32 peak, and the share of an
ONNX Runtime run spent in in-graph post-processing. See ``docs/benchmark.md``."""

from .flops import FlopCount, count_detector_flops, count_macs
from .ort_profile import attribute_profile, classify_nodes, profile_onnxruntime
from .peak import measure_peak_flops
from .report import format_markdown, plot_latency, write_json
from .runner import STAGES, BenchmarkOptions, benchmark_models, run_benchmark, run_export_timing
from .stats import peak_rss_mb, summarize

__all__ = [
    'STAGES',
    'BenchmarkOptions',
    'FlopCount',
    'attribute_profile',
    'benchmark_models',
    'classify_nodes',
    'count_detector_flops',
    'count_macs',
    'format_markdown',
    'measure_peak_flops',
    'peak_rss_mb',
    'plot_latency',
    'profile_onnxruntime',
    'run_benchmark',
    'run_export_timing',
    'summarize',
    'write_json',
]
