"""Reports of a benchmark: a Markdown table for people, JSON for machines, a PNG plot."""

import json
from pathlib import Path

from ..fileio import atomic_output, write_atomic

STAGES = ('pre', 'infer', 'post')


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    return write_atomic(path, json.dumps(report, indent=2) + '\n')


def _fmt(value, spec: str = '.1f', empty: str = '-') -> str:
    return empty if value is None else format(value, spec)


def format_markdown(report: dict) -> str:
    """The inference report as a Markdown table (milliseconds per batch: mean / median / p90)."""
    if report.get('kind') == 'export':
        return format_export_markdown(report)
    rounds = report.get('rounds', 1)
    first = next(iter(report['backends']), None)
    lines = [
        f'Batch {report["batch_size"]} at {report["shape"][0]}x{report["shape"][1]}, '
        f'{report["threads"]} threads, {report["iters"]} timed iterations after '
        f'{report["warmup"]} warm-up'
        + (f', in {rounds} interleaved rounds (A B .. A B ..)' if rounds > 1 else '')
        + f"; ms per batch as mean / median / p90; ratio = mean infer / total over {first}'s.",
        '',
        '| backend | pre ms | infer ms | post ms | total ms | img/s | peak RSS MiB | GFLOPs | '
        '% of peak | ORT in-graph post | precision | ratio infer / total |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for name, result in report['backends'].items():
        latency = result['latency_ms']
        cells = [name]
        for stage in (*STAGES, 'total'):
            s = latency[stage]
            cells.append(f'{s["mean"]:.1f} / {s["median"]:.1f} / {s["p90"]:.1f}')
        cells.append(f'{result["throughput_ips"]["total"]:.2f}')
        cells.append(_fmt(result['memory_mb'].get('peak_rss'), '.0f'))
        cells.append(_fmt(result['flops'] / 1e9 if result.get('flops') else None, '.2f'))
        fraction = result.get('peak_fraction')
        cells.append(_fmt(100 * fraction if fraction is not None else None, '.0f'))
        cells.append(in_graph_post_cell(result))
        cells.append(result.get('precision') or '-')
        ratio = result.get('ratio')
        cells.append(f'{ratio["infer"]:.2f} / {ratio["total"]:.2f}' if ratio else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    if any(r.get('ort_profile') for r in report['backends'].values()):
        lines += [
            '',
            'ORT in-graph post: share of the node time spent in post-processing nodes (ONNX '
            "Runtime's profiler, a separate pass), and that share of the timed infer mean.",
        ]
    peak = report.get('peak')
    if peak:
        lines += [
            '',
            f'FP32 peak: {peak["gflops"]:.1f} GFLOP/s ({peak["method"]}, '
            f'{peak["threads"]} threads).',
        ]
    peak_int8 = report.get('peak_int8')
    if peak_int8:
        lines.append(
            f'INT8 peak: {peak_int8["gops"]:.1f} GOP/s ({peak_int8["method"]}); "% of peak" of '
            'INT8 models is of this peak.'
        )
    isa = report.get('environment', {}).get('isa')
    if isa:
        have = [flag for flag, on in isa.items() if on is True]
        lines.append(
            f'CPU: {", ".join(have) or "no AVX2"}; integer GEMM path of ONNX Runtime (MLAS, by '
            f'CPUID): {isa.get("int8_gemm")}.'
        )
    kernels = kernel_lines(report)
    if kernels:
        lines += [
            '',
            'Kernels that ran (share of node time; OpenVINO: layers by runtime precision '
            'and kernel):',
            *kernels,
        ]
    flops = report.get('flops')
    if flops:
        lines.append(
            f'FLOPs: {flops["gflops"]:.2f} G per batch ({flops["method"]}, weights '
            f'{flops.get("weights")}); "% of peak" uses the infer mean.'
        )
    if report.get('busy'):
        lines.append(_busy_warning(report))
    return '\n'.join(lines)


def in_graph_post_cell(result: dict) -> str:
    """``12.0% (~12.5 ms)``: the profiler's post-processing share, in milliseconds of the timed
    runs (the profiler pass runs slower, so its own milliseconds do not add up with theirs)."""
    profile = result.get('ort_profile')
    if not profile:
        return '-'
    share = profile['postprocess_share']
    return f'{100 * share:.1f}% (~{share * result["latency_ms"]["infer"]["mean"]:.1f} ms)'


def kernel_lines(report: dict, top: int = 4) -> list[str]:
    """One line per backend: its heaviest ONNX Runtime op kernels (from the profiler pass) or
    OpenVINO's most common (layer, precision, kernel) triples."""
    lines = []
    for name, result in report['backends'].items():
        profile = result.get('ort_profile') or {}
        by_op = profile.get('by_op_ms')
        if by_op:
            total = sum(by_op.values()) or 1.0
            parts = [f'{op} {ms:.0f} ms ({100 * ms / total:.0f}%)' for op, ms in by_op.items()]
            lines.append(f'- {name}: ' + ', '.join(parts[:top]))
        ov = result.get('openvino_kernels')
        if ov:
            parts = [f'{count} x {kind}' for kind, count in ov.items() if ' ' in kind]
            convs = [p for p in parts if 'Convolution' in p or 'FullyConnected' in p]
            lines.append(f'- {name}: ' + ', '.join((convs or parts)[:top]))
    return lines


def _busy_warning(report: dict) -> str:
    return (
        f'WARNING: load average {report.get("load_average_start")} -> '
        f'{report.get("load_average_end")} on {report["environment"]["cpu_count"]} CPUs: the '
        'machine was busy, re-take these numbers on a quiet machine.'
    )


def format_export_markdown(report: dict) -> str:
    """The export-timing report as a Markdown table."""
    lines = [
        f'Export at {report["shape"][0]}x{report["shape"][1]} '
        f'({"dynamic" if report["dynamic"] else "static"}), opset {report["opset"]}, '
        f'{report["threads"]} threads.',
        '',
        '| exporter | wall s | CPU s | peak RSS MiB | RSS before export MiB | file MiB | nodes |',
        '|---|---|---|---|---|---|---|',
    ]
    for name, result in report['exports'].items():
        memory = result['memory_mb']
        lines.append(
            f'| {name} | {result["wall_s"]:.2f} | {_fmt(result.get("cpu_s"), ".1f")} | '
            f'{_fmt(memory["peak_rss"], ".0f")} | '
            f'{_fmt(memory["rss_before_export"], ".0f")} | {result["file_mb"]:.2f} | '
            f'{result["num_nodes"]} |'
        )
    if report.get('busy'):
        lines += ['', _busy_warning(report)]
    return '\n'.join(lines)


def _log_ticks(ax, low: float, high: float) -> None:
    """Plain-number ticks on a log axis, few enough not to collide: 1-2-5 per decade over a
    short span, powers of ten over a long one; unlabelled minor ticks (matplotlib labels them
    as ``3x10^1 4x10^1`` side by side when the axis spans less than a decade)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    subs = (1,) if last - first > 3 else (1, 2, 5)
    ticks = [s * 10.0**d for d in range(first, last + 1) for s in subs]
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if low <= t <= high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f'{value:g}'))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_latency(report: dict, path: str | Path) -> Path:
    """Two panels, written atomically as PNG: the mean total per backend on a **log** axis (so a
    107 ms bar next to a 1875 ms one is still a bar), with a whisker to its p90; and where each
    backend's time goes, pre / infer / post as a share of its mean total (visible whatever the
    backend's speed)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(report['backends'])
    latency = {n: report['backends'][n]['latency_ms'] for n in names}
    totals = [latency[n]['total'] for n in names]
    fig, (ax_total, ax_share) = plt.subplots(
        1, 2, figsize=(10, 1.9 + 0.55 * len(names)), sharey=True, width_ratios=(3, 2)
    )
    colors = {'pre': '#8da0cb', 'infer': '#fc8d62', 'post': '#66c2a5'}
    ax_total.barh(names, [t['mean'] for t in totals], color='#b3b3b3', label='mean total')
    ax_total.errorbar(
        [t['mean'] for t in totals],
        names,
        xerr=[[0] * len(names), [max(t['p90'] - t['mean'], 0) for t in totals]],
        fmt='none',
        ecolor='black',
        capsize=3,
        label='to p90',
    )
    for name, total in zip(names, totals):
        ax_total.annotate(
            f' {total["mean"]:.1f} ms',
            (max(total['p90'], total['mean']), name),
            va='center',
            fontsize='small',
        )
    ax_total.set_xscale('log')
    high = max(max(t['p90'], t['mean']) for t in totals)
    low = min(t['mean'] for t in totals)
    ax_total.set_xlim(low / 3, high * 4)
    _log_ticks(ax_total, low / 3, high * 4)
    ax_total.invert_yaxis()
    ax_total.set_xlabel('ms per batch, end to end (log scale)')
    left = [0.0] * len(names)
    for stage in STAGES:
        shares = [
            100 * latency[n][stage]['mean'] / max(latency[n]['total']['mean'], 1e-9) for n in names
        ]
        bars = ax_share.barh(names, shares, left=left, color=colors[stage], label=stage)
        for bar, share in zip(bars, shares):
            if share >= 8:
                ax_share.annotate(
                    f'{share:.0f}%',
                    (bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2),
                    ha='center',
                    va='center',
                    fontsize='x-small',
                )
        left = [a + b for a, b in zip(left, shares)]
    ax_share.set_xlim(0, 100)
    ax_share.set_xlabel('share of the mean total (%)')
    fig.suptitle(
        f'batch {report["batch_size"]}, {report["shape"][0]}x{report["shape"][1]}, '
        f'{report["threads"]} threads' + (' (busy machine)' if report.get('busy') else ''),
        fontsize='medium',
    )
    ax_share.legend(
        loc='upper center', bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize='small', frameon=False
    )
    ax_total.legend(
        loc='upper center', bbox_to_anchor=(0.5, -0.35), ncol=2, fontsize='small', frameon=False
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path) as f:
            fig.savefig(f, dpi=100, format='png')
    finally:
        plt.close(fig)
    return path
