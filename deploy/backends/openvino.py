"""OpenVINO backend: our ONNX files as they are (NMS and RoiAlign included), on Intel-style CPUs.

``openvino`` is optional and imported when a model is loaded; without it, one
:class:`~deploy.errors.BackendError` line says how to install it.

Precision is a run-time choice of OpenVINO's CPU plugin, not a property of the file:

* ``fp32``: ``INFERENCE_PRECISION_HINT=f32`` (the same detections as ONNX Runtime);
* ``bf16``: ``INFERENCE_PRECISION_HINT=bf16``, on CPUs with AVX512-BF16 or AMX (elsewhere
  :class:`~deploy.errors.BackendUnavailable`, not a silent FP32 run). The plugin lowers only the
  convolutions, matrix products and the element-wise ops, pooling and resizes between them;
  box decoding, TopK, NMS, RoiAlign and the gathers after them keep running in FP32 (read back
  from the execution graph by :func:`runtime_summary`), the split the FP16 export makes by hand;
* ``int8``: the QDQ file made by ``tools/quantize.py`` (one quantisation for ONNX Runtime and
  OpenVINO); OpenVINO turns the Q/DQ pairs into INT8 kernels, the rest runs in FP32. A file
  with uint8 weights (``--weights uint8``, the choice for ONNX Runtime on CPUs without VNNI)
  would run in FP32 here and is refused (:class:`~deploy.errors.BackendUnavailable`).

The default (``None``) is the file's own precision (``int8`` for a quantised file, else
``fp32``). The converted model is cached as OpenVINO IR next to the ONNX file, in
``<name>.openvino/``, under a key of the OpenVINO version, the SHA-256 of the ONNX file and of
its external data files (:func:`deploy.model_digest.model_digest`) and the precision, so a later
load skips the ONNX import.

An IR kept as a file to ship (``tools/onnx2openvino.py``, :func:`save_ir`: ``model.xml`` and
``model.bin``) carries the model spec and the ONNX graph's input and output names in its
``rt_info``, and loads directly (``OpenVINOBackend('model.xml')``), in any of the precisions
above; it needs neither the ONNX file nor the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, BackendUnavailable, ConfigError
from ..fileio import is_temporary, temporary_folder
from ..model_digest import model_digest
from ..spec import ModelSpec, read_onnx_spec
from .base import Backend

#: inference precisions this backend offers
PRECISIONS = ('fp32', 'bf16', 'int8')


def import_openvino():
    """``openvino`` or one clear line."""
    try:
        import openvino
    except ImportError:
        raise BackendError(
            'the openvino backend needs the openvino package: pip install openvino'
        ) from None
    return openvino


#: ``rt_info`` keys of an IR written by :func:`save_ir`: the model spec (JSON) and the ONNX
#: graph's input and output names (JSON list)
IR_SPEC_KEY = 'deploy_spec'
IR_IO_KEY = 'deploy_io_names'


@dataclass
class IRFile:
    """An IR written by :func:`save_ir`, read: the model, its spec and its graph's I/O names."""

    model: object
    spec: ModelSpec
    io_names: set[str]


def save_ir(
    onnx_file: str | Path, xml_file: str | Path, check: Callable[[Path], None] | None = None
) -> tuple[Path, Path]:
    """Convert an exported ONNX file to OpenVINO IR, ``xml_file`` and the ``.bin`` beside it,
    that :class:`OpenVINOBackend` loads directly. Weights stay FP32 (the inference precision is
    chosen at load time); the model spec travels in the IR's ``rt_info``. Both files are written
    under temporary names and renamed when complete (the ``.bin`` first), after ``check`` (given
    the temporary ``.xml``) returned."""
    onnx_file, xml_file = Path(onnx_file), Path(xml_file)
    if xml_file.suffix.lower() != '.xml':
        raise ConfigError(f'{xml_file}: an OpenVINO IR is written as a .xml file (and a .bin)')
    spec = read_onnx_spec(onnx_file)
    if spec is None:
        raise ConfigError(f'{onnx_file} holds no model spec: export it with tools/pytorch2onnx.py')
    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(onnx_file))
    except RuntimeError as err:
        raise BackendError(f'OpenVINO cannot read {onnx_file}: {_last_line(err)}') from None
    model.set_rt_info(spec.to_json(), [IR_SPEC_KEY])
    model.set_rt_info(json.dumps(sorted(_graph_io_names(onnx_file))), [IR_IO_KEY])
    xml_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_file.parent, prefix=f'.{xml_file.stem}.tmp-') as tmp:
        staged = Path(tmp) / 'model.xml'
        ov.save_model(model, str(staged), compress_to_fp16=False)
        if check is not None:
            check(staged)
        os.replace(staged.with_suffix('.bin'), xml_file.with_suffix('.bin'))
        os.replace(staged, xml_file)
    return xml_file, xml_file.with_suffix('.bin')


def read_ir(xml_file: Path) -> IRFile:
    """An IR from :func:`save_ir`; one written otherwise (no spec inside) is refused in one line."""
    ov = import_openvino()
    if not xml_file.with_suffix('.bin').is_file():
        raise BackendError(f'{xml_file.with_suffix(".bin")} not found: an IR is a .xml and a .bin')
    try:
        model = ov.Core().read_model(str(xml_file))
    except RuntimeError as err:
        raise BackendError(f'OpenVINO cannot read {xml_file}: {_last_line(err)}') from None
    if not model.has_rt_info([IR_SPEC_KEY]):
        raise ConfigError(
            f'{xml_file} holds no model spec: write the IR with tools/onnx2openvino.py'
        )
    spec = ModelSpec.from_json(model.get_rt_info([IR_SPEC_KEY]).astype(str))
    io_names = set(json.loads(model.get_rt_info([IR_IO_KEY]).astype(str)))
    return IRFile(model, spec, io_names)


def cpu_capabilities(core=None) -> list[str]:
    """OpenVINO's list of what this CPU runs natively (``FP32``, ``INT8``, ``BF16``, ...)."""
    if core is None:
        core = import_openvino().Core()
    return list(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


def require_bf16(core) -> None:
    """Stop when the CPU has no BF16 instructions: the plugin would silently run FP32 and a
    "bf16" row would report FP32 numbers."""
    capabilities = cpu_capabilities(core)
    if 'BF16' not in capabilities:
        raise BackendUnavailable(
            'this CPU has no BF16 support (OpenVINO CPU capabilities: '
            f'{", ".join(capabilities)}): run the openvino backend in fp32 or int8'
        )


def _int8_weights(spec) -> str:
    """The weight type a quantised file was written with (files from before the choice: int8)."""
    record = (spec.extra.get('int8') if spec is not None else None) or {}
    return record.get('weights', 'int8')


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(model_file: Path) -> Path:
    """Where the IR of ``model_file`` is cached."""
    return model_file.with_name(f'{model_file.name}.openvino')


class OpenVINOBackend(Backend):
    """Runs an exported ONNX file on OpenVINO's CPU plugin.

    Args:
        model_file: the ``.onnx`` file (FP32, or INT8 QDQ from ``tools/quantize.py``).
        device: ``'cpu'`` (OpenVINO's ``CPU`` device).
        num_threads: ``INFERENCE_NUM_THREADS`` (``None``: all cores).
        precision: ``fp32``, ``bf16`` or ``int8`` (``None``: the file's; see the module doc).
        cache: read/write the IR cache next to the file (off when the folder is read-only).
    """

    name = 'openvino'

    def __init__(
        self,
        model_file: str | Path,
        device: str = 'cpu',
        num_threads: int | None = None,
        precision: str | None = None,
        cache: bool = True,
    ):
        model_file = Path(model_file)
        if not model_file.is_file():
            raise BackendError(f'model file not found: {model_file}')
        if device != 'cpu':
            raise BackendError(f'the openvino backend runs on the CPU here, not {device!r}')
        ir = read_ir(model_file) if model_file.suffix.lower() == '.xml' else None
        self.spec = ir.spec if ir else read_onnx_spec(model_file)
        file_precision = self.spec.precision if self.spec is not None else 'fp32'
        if precision is None:
            precision = 'int8' if file_precision == 'int8' else 'fp32'
        if precision not in PRECISIONS:
            raise BackendError(
                f'unsupported openvino precision {precision!r}; choose one of '
                f'{", ".join(PRECISIONS)}'
            )
        if precision == 'int8' and file_precision != 'int8':
            raise BackendError(
                f'{model_file.name} is {file_precision}: OpenVINO runs INT8 from a quantised '
                f'(QDQ) file, make one with tools/quantize.py'
            )
        if precision == 'int8' and _int8_weights(self.spec) == 'uint8':
            raise BackendUnavailable(
                f'{model_file.name} stores its weights as uint8 (quantised for ONNX Runtime on a '
                'CPU without VNNI), which OpenVINO runs in FP32, not INT8: quantise with '
                'tools/quantize.py --weights int8 for OpenVINO'
            )
        if precision != 'int8' and file_precision == 'int8':
            raise BackendError(
                f'{model_file.name} is quantised (INT8 QDQ): run it with precision int8, or '
                f'run the FP32 export in {precision}'
            )
        ov = import_openvino()
        self.model_file = model_file
        self.precision = precision
        self.ov_version = ov.get_version()
        core = ov.Core()
        if precision == 'bf16':
            require_bf16(core)
        model = ir.model if ir else self._read(core, ov, model_file, cache)
        config = {
            'PERFORMANCE_HINT': 'LATENCY',
            'NUM_STREAMS': '1',
            'INFERENCE_PRECISION_HINT': 'bf16' if precision == 'bf16' else 'f32',
            # Threads pinned to cores would fight the other processes of a shared machine and
            # our own pre/post-processing, as spinning ORT threads did.
            'ENABLE_CPU_PINNING': 'NO',
        }
        if num_threads:
            config['INFERENCE_NUM_THREADS'] = str(num_threads)
        try:
            self.compiled = core.compile_model(model, 'CPU', config)
        except RuntimeError as err:
            raise BackendError(f'OpenVINO cannot compile {model_file}: {_last_line(err)}') from None
        self.request = self.compiled.create_infer_request()
        # A port can carry several tensor names (OpenVINO merges an input with the ops that only
        # forward it): name each by the graph's own input / output name.
        known = ir.io_names if ir else _graph_io_names(model_file)
        self.input_names = tuple(_port_name(p, known) for p in self.compiled.inputs)
        self.output_names = tuple(_port_name(p, known) for p in self.compiled.outputs)
        self._ports = dict(zip(self.output_names, self.compiled.outputs))
        self.num_threads = num_threads
        self.config = config

    def _read(self, core, ov, model_file: Path, cache: bool):
        """The ONNX model through the IR cache: ``<file>.openvino/<key>.xml``."""
        key = None
        if cache and not is_temporary(model_file):  # a staged file is renamed in a moment
            digest = model_digest(model_file)[:16]  # the graph and its external data
            key = f'ov{self.ov_version.split("-")[0]}-{digest}-{self.precision}'
            xml = cache_dir(model_file) / f'{key}.xml'
            if xml.is_file() and xml.with_suffix('.bin').is_file():
                try:
                    return core.read_model(str(xml))
                except RuntimeError:
                    pass  # a damaged cache entry: read the ONNX file again
        try:
            model = core.read_model(str(model_file))
        except RuntimeError as err:
            raise BackendError(f'OpenVINO cannot read {model_file}: {_last_line(err)}') from None
        if key is not None:
            self._save_cache(ov, model, model_file, key)
        return model

    @staticmethod
    def _save_cache(ov, model, model_file: Path, key: str) -> None:
        """Write the IR atomically (a temporary name, renamed); an unwritable folder only
        costs the cache."""
        import os

        folder = cache_dir(model_file)
        try:
            folder.mkdir(exist_ok=True)
            with temporary_folder(folder / key) as tmp:
                staged = Path(tmp) / f'{key}.xml'
                ov.save_model(model, str(staged), compress_to_fp16=False)
                os.replace(staged.with_suffix('.bin'), folder / f'{key}.bin')
                os.replace(staged, folder / f'{key}.xml')
        except OSError:
            pass

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise BackendError(f'{self.model_file.name} takes input {name!r}')
            feed[name] = np.ascontiguousarray(inputs[name])
        try:
            results = self.request.infer(feed)
        except RuntimeError as err:
            raise BackendError(
                f'OpenVINO failed on {self.model_file.name}: {_last_line(err)}'
            ) from None
        return {name: np.asarray(results[port]) for name, port in self._ports.items()}


def runtime_summary(compiled) -> dict[str, int]:
    """``{"<layer type> <precision> <kernel>": count}`` of a compiled model's execution graph:
    which precision each layer really runs in and which kernel implements it (e.g.
    ``Convolution bf16 brgconv_avx512_core``, ``Convolution u8 jit_avx512_core_vnni``)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info['layerType'].astype(str)
        if kind in ('Const', 'Input', 'Output'):
            continue
        key = f'{kind} {info["runtimePrecision"].astype(str)} {info["primitiveType"].astype(str)}'
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _graph_io_names(model_file: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return {v.name for v in (*graph.input, *graph.output)}


def _port_name(port, known: set[str]) -> str:
    names = port.get_names()
    preferred = sorted(names & known) or sorted(names)
    return preferred[0] if preferred else port.get_any_name()


def _last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
