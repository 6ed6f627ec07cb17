"""Latency of CornerNet's two graph-built ops in ONNX Runtime against their eager versions, as JSON.

    python tools/analysis/cornernet_ops_latency.py
    python tools/analysis/cornernet_ops_latency.py --feature 128 192 --channels 128 --runs 20

* corner pooling: the four directions of one head (top, left, bottom, right) on ``[1, C, H, W]``
  feature maps -- eager ``torch.cummax`` (MMCV's code, the reference) against the exported graph
  (a MaxPool, then a Loop of doubling steps that runs zero times up to 256 pixels);
* soft-NMS: ``num`` candidates of one image (random boxes over the feature map's image, scores
  from CornerNet-like pairs, 80 classes), ``max_per_img`` picks -- the eager op against the
  exported ``Loop``.

Each graph is exported with the chosen exporter and checked against the eager output first. Runs
alternate between eager and ONNX Runtime; the timed span is one call with inputs in memory (one
``session.run`` for the graph). Defaults: the feature map of a 511 x 767 canvas (a 480 x 640 COCO
image) and the head's 128 channels.
"""

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='ORT latency of corner pooling and soft-NMS')
    parser.add_argument('--feature', type=int, nargs=2, default=(128, 192), metavar=('H', 'W'))
    parser.add_argument('--channels', type=int, default=128, help='channels of each pooled map')
    parser.add_argument('--num', type=int, default=1000, help='soft-NMS candidates')
    parser.add_argument('--max-per-img', type=int, default=100, help='soft-NMS picks')
    parser.add_argument('--exporter', choices=('dynamo', 'torchscript'), default='dynamo')
    parser.add_argument('--runs', type=int, default=10, help='timed runs of each variant')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs of each variant')
    parser.add_argument('--threads', type=int, default=2, help='torch and ORT intra-op threads')
    parser.add_argument('--out', default=None, help='also write the JSON here')
    return parser.parse_args(argv)


def _export(module, args, names, path, exporter):
    """Export quietly (the exporters print progress on stdout, where the JSON goes)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _export_loud(module, args, names, path, exporter)


def _export_loud(module, args, names, path, exporter):
    import onnx
    import torch

    from deploy.export import onnx_ops

    dims = {name: {0: torch.export.Dim('batch', min=1, max=64)} for name in names}
    if exporter == 'dynamo':
        program = torch.onnx.export(
            module,
            args,
            None,
            dynamo=True,
            external_data=False,
            opset_version=18,
            input_names=list(names),
            dynamic_shapes=dims,
            custom_translation_table=onnx_ops.onnx_translation_table(),
        )
        program.save(str(path), external_data=False)
    else:
        onnx_ops.register_legacy_symbolics(18)
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=18, input_names=list(names)
        )
    onnx.save(onnx_ops.inline_local_functions(onnx.load(str(path))), str(path))


def _time_pair(eager, graph, runs: int, warmup: int) -> dict:
    """Alternating runs: median and mean milliseconds of each."""
    for _ in range(warmup):
        eager()
        graph()
    times = {'eager': [], 'onnxruntime': []}
    for _ in range(runs):
        for name, fn in (('eager', eager), ('onnxruntime', graph)):
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    out = {
        name: dict(median_ms=statistics.median(t), mean_ms=statistics.fmean(t))
        for name, t in times.items()
    }
    out['ratio_median'] = out['onnxruntime']['median_ms'] / out['eager']['median_ms']
    return out


def measure(args) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    from deploy.ops.corner_pool import MODES, corner_pool
    from deploy.ops.soft_nms import batched_soft_nms

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    gen = torch.Generator().manual_seed(0)
    report = dict(exporter=args.exporter, threads=args.threads, runs=args.runs)

    class Pools(torch.nn.Module):
        def forward(self, x):
            return tuple(corner_pool(x, mode) for mode in MODES)

    class SoftNms(torch.nn.Module):
        def forward(self, boxes, scores, labels, valid):
            return batched_soft_nms(
                boxes, scores, labels, valid, 0.5, 0.5, 1e-3, 'gaussian', args.max_per_img
            )

    height, width = args.feature
    x = torch.randn(1, args.channels, height, width, generator=gen)
    xy = torch.rand(1, args.num, 2, generator=gen) * torch.tensor([4.0 * width, 4.0 * height])
    wh = torch.rand(1, args.num, 2, generator=gen) * 200 + 4
    nms_args = (
        torch.cat([xy, xy + wh], -1),
        (torch.rand(1, args.num, generator=gen) + torch.rand(1, args.num, generator=gen)) / 2,
        torch.randint(0, 80, (1, args.num), generator=gen),
        torch.ones(1, args.num, dtype=torch.bool),
    )
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, module, inputs, names in (
            ('corner_pool', Pools().eval(), (x,), ('x',)),
            ('soft_nms', SoftNms().eval(), nms_args, ('boxes', 'scores', 'labels', 'valid')),
        ):
            path = Path(tmp) / f'{name}.onnx'
            _export(module, inputs, names, path, args.exporter)
            session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
            feed = {n: t.numpy() for n, t in zip(names, inputs)}
            expected = [t.numpy() for t in module(*inputs)]
            got = session.run(None, feed)
            same = all(np.allclose(g, e, rtol=1e-6, atol=1e-6) for g, e in zip(got, expected))
            report[name] = dict(
                shape=list(inputs[0].shape),
                equal_to_eager=bool(same),
                **_time_pair(
                    lambda m=module, i=inputs: m(*i),
                    lambda s=session, f=feed: s.run(None, f),
                    args.runs,
                    args.warmup,
                ),
            )
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    report = measure(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from deploy.fileio import write_atomic

        write_atomic(args.out, text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
