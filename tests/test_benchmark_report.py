"""The benchmark's table and plot, on a report made by hand (nothing is timed)."""

import matplotlib
import pytest

from deploy.benchmark.report import format_markdown, plot_latency

matplotlib.use('Agg')


def _stats(ms):
    return dict(mean=ms, median=ms, p90=ms * 1.1)


def _backend(infer_ms, profile=None):
    latency = dict(pre=_stats(3.0), infer=_stats(infer_ms), post=_stats(2.0))
    latency['total'] = _stats(5.0 + infer_ms)
    return dict(
        latency_ms=latency,
        throughput_ips=dict(total=1000 / (5.0 + infer_ms)),
        memory_mb=dict(peak_rss=500.0),
        precision='fp32',
        ort_profile=profile,
    )


def _report(infer: dict[str, float]) -> dict:
    # The profiler pass ran slower (its own 30 ms of post-processing), the timed infer is 100 ms.
    profile = dict(postprocess_share=0.12, postprocess_ms=30.0, run_ms=250.0)
    backends = {
        name: _backend(ms, profile if name == 'onnxruntime' else None) for name, ms in infer.items()
    }
    return dict(
        batch_size=1,
        shape=(320, 320),
        threads=2,
        iters=20,
        warmup=5,
        backends=backends,
        environment=dict(cpu_count=2),
    )


def test_in_graph_post_ms_are_on_the_timed_runs_scale():
    table = format_markdown(_report({'onnxruntime': 100.0, 'pytorch': 400.0}))
    assert '12.0% (~12.0 ms)' in table and '30.0 ms' not in table
    assert 'share of the timed infer mean' in table


@pytest.mark.parametrize(
    'infer', [{'onnxruntime': 41.0, 'openvino': 52.0}, {'onnxruntime': 104.0, 'pytorch': 1870.0}]
)
def test_log_axis_tick_labels_do_not_collide(infer, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)  # keep the figure to measure its labels
    plot_latency(_report(infer), tmp_path / 'plot.png')
    assert (tmp_path / 'plot.png').stat().st_size > 0
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    axis = fig.axes[0]
    labels = [t for t in axis.get_xticklabels(which='both') if t.get_text() and t.get_visible()]
    lo, hi = axis.get_xlim()
    labels = [t for t in labels if lo <= t.get_position()[0] <= hi]
    assert len(labels) >= 3, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, 'tick labels overlap'
    assert all('10^' not in t.get_text() and '$' not in t.get_text() for t in labels)
