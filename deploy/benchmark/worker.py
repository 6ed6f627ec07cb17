"""One measurement in a fresh process: ``python -m deploy.benchmark.worker SPEC.json OUT.json``.

Every backend (and every exporter, in export timing) is measured in its own interpreter, so the
peak RSS (``getrusage`` high-water mark) belongs to that backend alone and no thread pool,
allocator cache or JIT state carries over from one measurement to the next. The parent
(:mod:`deploy.benchmark.runner`) writes the spec, starts this module and reads the result.
"""

import ast
import json
import os
import sys
import time
from pathlib import Path

from ..fileio import write_atomic


def set_threads(num_threads: int | None) -> dict:
    """Fix torch's intra-op threads (and OpenCV's) and return what is really in effect."""
    import cv2
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
        cv2.setNumThreads(num_threads)
    return dict(
        torch_intra_op=torch.get_num_threads(),
        torch_inter_op=torch.get_num_interop_threads(),
        opencv=cv2.getNumThreads(),
    )


def cfg_options(spec: dict):
    """The ``--cfg-options`` of the spec: a ``repr`` (JSON would turn tuples into lists, and
    MMDetection reads a list of scales differently from a tuple)."""
    return ast.literal_eval(spec['cfg_options']) if spec.get('cfg_options') else None


def measure_backend(spec: dict) -> dict:
    """Time pre-processing, the backend call and post-processing of ``spec['iters']`` batches.

    Spec keys: ``backend``, ``model_file``, ``config``, ``cfg_options``, ``image``, ``shape``
    ``(h, w)``, ``batch_size``, ``warmup``, ``iters``, ``threads``, ``device``, ``ort_profile``
    (bool: also run :func:`profile_onnxruntime`), ``profile_iters``.
    """
    from .stats import current_rss_mb, peak_rss_mb, summarize

    rss_start = current_rss_mb()
    threads = set_threads(spec['threads'])
    from ..apis.contract import plan_run
    from ..backends import build_backend
    from ..config import load_config
    from ..datasets.pipeline import DecodedImagePipeline, TestPipeline, collate, network_inputs
    from ..postprocess import outputs_to_results

    cfg = load_config(spec['config'], cfg_options(spec))
    name = spec['backend']
    extra = dict(precision=spec['precision']) if spec.get('precision') else {}
    runner = build_backend(
        name,
        spec['model_file'],
        cfg=cfg,
        device=spec.get('device', 'cpu'),
        num_threads=spec['threads'],
        **extra,
    )
    session = getattr(runner, 'session', None)
    if session is not None:  # ONNX Runtime: record what the session really uses
        options = session.get_session_options()
        threads['ort_intra_op'] = options.intra_op_num_threads
        threads['ort_inter_op'] = options.inter_op_num_threads
        threads['ort_providers'] = list(session.get_providers())
    rss_loaded = current_rss_mb()
    plan = plan_run(runner, cfg, spec['model_file'], logger=lambda *a: None)
    if plan.decoded_images:  # the graph resizes, normalises and pads: the image goes in as read
        pipeline = DecodedImagePipeline()
    else:
        pipeline = TestPipeline(plan.preprocess, fixed_shape=tuple(spec['shape']))
    image, batch_size = spec['image'], spec['batch_size']

    def preprocess():
        img, metas = collate([pipeline(image) for _ in range(batch_size)])
        return network_inputs(img, metas), metas

    times = {stage: [] for stage in ('pre', 'infer', 'post', 'total')}
    detections = 0
    cpu_start = wall_start = None
    for i in range(spec['warmup'] + spec['iters']):
        if i == spec['warmup']:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
        t0 = time.perf_counter()
        inputs, metas = preprocess()
        t1 = time.perf_counter()
        outputs = runner(inputs)
        t2 = time.perf_counter()
        results = outputs_to_results(outputs, metas, plan.result_filter)
        t3 = time.perf_counter()
        if i < spec['warmup']:
            continue
        times['pre'].append(t1 - t0)
        times['infer'].append(t2 - t1)
        times['post'].append(t3 - t2)
        times['total'].append(t3 - t0)
        detections = sum(len(r) for r in results)
    cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    latency = {stage: summarize(samples) for stage, samples in times.items()}
    spec_precision = runner.spec.precision if getattr(runner, 'spec', None) else 'fp32'
    result = dict(
        backend=name,
        # what the backend computes in: the file's precision, or the one chosen at load
        precision=getattr(runner, 'precision', None) or spec_precision,
        # the raw seconds per iteration, so that interleaved rounds can be merged
        samples_s=times,
        model_file=str(spec['model_file']),
        device=spec.get('device', 'cpu'),
        threads=threads,
        latency_ms=latency,
        throughput_ips=dict(
            total=batch_size * 1000.0 / latency['total']['mean'],
            infer=batch_size * 1000.0 / latency['infer']['mean'],
        ),
        input_shape=list(inputs['input'].shape),
        detections_last_batch=detections,
        memory_mb=dict(rss_start=rss_start, rss_after_load=rss_loaded),
        # CPU seconds of all this process's threads per wall second over the timed loop: at most
        # the thread count; well below it on a contended machine (or in single-threaded stages).
        cpu_per_wall=cpu_s / wall_s if wall_s > 0 else None,
        ort_profile=None,
    )
    # The high-water mark of this backend's own work, read before the profiling session (a
    # second copy of the model) can raise it.
    result['memory_mb']['peak_rss'] = peak_rss_mb()
    if name == 'openvino':  # the precision and kernel each layer really runs with
        from ..backends.openvino import runtime_summary

        result['openvino_kernels'] = runtime_summary(runner.compiled)
    if spec.get('ort_profile') and name == 'onnxruntime':
        from .ort_profile import profile_onnxruntime

        result['ort_profile'] = profile_onnxruntime(
            spec['model_file'],
            inputs,
            num_threads=spec['threads'],
            providers=threads.get('ort_providers'),
            warmup=min(spec['warmup'], 2),
            iters=spec.get('profile_iters', 5),
        )
        result['memory_mb']['peak_rss_with_profiler'] = peak_rss_mb()
    return result


def measure_export(spec: dict) -> dict:
    """Time :func:`deploy.export.onnx_export.export_onnx` for one exporter.

    Spec keys: ``config``, ``checkpoint``, ``cfg_options``, ``image``, ``shape``, ``exporter``,
    ``dynamic``, ``opset``, ``threads``, ``output_file``. Model building and the example input are
    outside the timed span; the export, the ONNX check of the opset and the metadata write are in.
    """
    from .stats import current_rss_mb, peak_rss_mb

    threads = set_threads(spec['threads'])
    import torch

    from ..apis.model import init_detector
    from ..config import get_preprocess_cfg
    from ..datasets.pipeline import TestPipeline, collate
    from ..export.onnx_export import export_onnx

    model, cfg = init_detector(
        spec['config'],
        spec.get('checkpoint'),
        cfg_options=cfg_options(spec),
        logger=lambda *a: None,
    )
    pipeline = TestPipeline(get_preprocess_cfg(cfg), fixed_shape=tuple(spec['shape']))
    # Dynamic export needs an example batch of 2 (torch.export specialises sizes 0 and 1).
    img, metas = collate([pipeline(spec['image'])] * (2 if spec['dynamic'] else 1))
    img_shape = torch.tensor([m['img_shape'][:2] for m in metas], dtype=torch.float32)
    rss_before, peak_before = current_rss_mb(), peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    export_onnx(
        model,
        img,
        img_shape,
        spec['output_file'],
        exporter=spec['exporter'],
        opset_version=spec['opset'],
        dynamic=spec['dynamic'],
        spec=model.spec,
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_rss_mb()
    import onnx

    graph = onnx.load(spec['output_file'], load_external_data=False).graph
    return dict(
        exporter=spec['exporter'],
        dynamic=spec['dynamic'],
        opset=spec['opset'],
        threads=threads,
        wall_s=wall,
        # CPU seconds of all threads: tracing is one thread, so on a busy machine this moves
        # less than the wall time and compares two exports more fairly
        cpu_s=cpu,
        memory_mb=dict(
            rss_before_export=rss_before,
            peak_rss_before_export=peak_before,
            peak_rss=peak,
            export_increase=max(peak - (rss_before or peak_before), 0.0),
        ),
        file_mb=os.path.getsize(spec['output_file']) / 2**20,
        num_nodes=len(graph.node),
    )


MODES = {'backend': measure_backend, 'export': measure_export}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_file, out_file = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_file.read_text())
    from ..errors import DeployError

    try:
        result = MODES[spec['mode']](spec)
    except DeployError as err:  # reported by the parent as one clean line
        result, code = dict(error=str(err)), 2
    else:
        code = 0
    write_atomic(out_file, json.dumps(result))
    return code


if __name__ == '__main__':
    sys.exit(main())
