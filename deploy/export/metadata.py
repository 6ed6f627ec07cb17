"""Deployment metadata stored in the ONNX file, so the file alone says how to feed and read it."""

import json
from dataclasses import asdict

import onnx

from ..config.preprocess import PreprocessConfig
from ..errors import BackendError

METADATA_KEY = 'deploy'


def effective_nms_settings(test_cfg: dict) -> dict:
    """The NMS settings the exported graph really uses, with defaults made explicit.

    For two-stage models ``test_cfg`` has ``rpn``/``rcnn`` parts; each is resolved separately.
    """
    if 'rcnn' in test_cfg or 'rpn' in test_cfg:
        return {
            part: effective_nms_settings(test_cfg[part])
            for part in ('rpn', 'rcnn')
            if test_cfg.get(part) is not None
        }
    nms = dict(test_cfg.get('nms') or {})
    max_per_img = test_cfg.get('max_per_img', 100)
    cap = nms.get('max_output_boxes_per_class', max_per_img)
    return dict(
        nms_pre=test_cfg.get('nms_pre', -1),
        deploy_nms_pre=test_cfg.get('deploy_nms_pre', -1),
        score_thr=test_cfg.get('score_thr', 0.0),
        iou_threshold=nms.get('iou_threshold'),
        max_per_img=max_per_img,
        max_output_boxes_per_class=max_per_img if cap <= 0 else min(cap, max_per_img),
        min_bbox_size=test_cfg.get('min_bbox_size', -1),
    )


def build_metadata(
    *,
    model_type: str,
    class_names,
    preprocess: PreprocessConfig,
    input_shape: tuple[int, int] | None,
    dynamic: bool,
    test_cfg: dict,
    opset: int,
    exporter: str,
    input_names,
    output_names,
    dynamic_axes: dict,
    skip_postprocess: bool,
) -> dict:
    """Everything a backend or a reader needs to use the exported file correctly."""
    import torch

    from .. import __version__

    return dict(
        model_type=model_type,
        class_names=list(class_names) if class_names else None,
        preprocess=asdict(preprocess),
        # How an image becomes the network input: keep-ratio resize + pad to size_divisor when
        # dynamic; keep-ratio fit into input_shape (h, w) + pad to exactly it when static.
        input_rules=dict(
            dynamic=dynamic,
            input_shape=list(input_shape) if input_shape else None,
            size_divisor=preprocess.size_divisor,
        ),
        nms=effective_nms_settings(test_cfg),
        opset=opset,
        exporter=exporter,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes={k: {str(a): n for a, n in v.items()} for k, v in dynamic_axes.items()},
        skip_postprocess=skip_postprocess,
        torch_version=torch.__version__,
        deploy_version=__version__,
    )


def write_metadata(model: onnx.ModelProto, metadata: dict) -> None:
    """Store ``metadata`` as JSON under one ``metadata_props`` key (replacing an older one)."""
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))


def read_metadata(path_or_model) -> dict:
    """The metadata written by :func:`write_metadata` (``{}`` for a foreign ONNX file)."""
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        try:
            model = onnx.load(str(path_or_model), load_external_data=False)
        except Exception as err:  # onnx raises DecodeError, OSError, ... for broken files
            raise BackendError(f'cannot read ONNX file {path_or_model}: {err}') from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}
