"""Run a detector exported with ``--preprocess-in-graph`` with nothing but numpy, OpenCV and
ONNX Runtime: no PyTorch, no package of this project.

    python demo/onnxruntime_demo.py work_dirs/model.onnx demo/demo.jpg --out-file result.jpg

The graph takes the image as OpenCV decodes it (``uint8`` BGR ``[1, H, W, 3]``, any size), does
the resize, normalisation and padding itself, and returns ``dets [1, K, 5]`` (``x1, y1, x2, y2,
score`` in image pixels), ``labels [1, K]`` (-1 on padding rows) and, for instance segmentation
models, ``masks [1, K, m, m]`` (mask probabilities over each box). The class names are in the
file's metadata (``metadata_props['deploy']``, JSON).
"""

import argparse
import json
import sys

import cv2
import numpy as np
import onnxruntime as ort


def load(model_path: str) -> tuple[ort.InferenceSession, list]:
    session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    if [i.name for i in session.get_inputs()] != ['image']:
        sys.exit(
            f'error: {model_path} takes normalised tensors: export it with --preprocess-in-graph'
        )
    spec = json.loads(session.get_modelmeta().custom_metadata_map.get('deploy', '{}'))
    return session, spec.get('class_names') or []


def paste_mask(probs: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    """A box's ``m x m`` mask probabilities resized onto the image, thresholded at 0.5."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask = np.zeros((height, width), bool)
    w, h = max(x2 - x1, 1), max(y2 - y1, 1)
    region = cv2.resize(probs, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
    x0, y0 = max(x1, 0), max(y1, 0)
    xe, ye = min(x1 + w, width), min(y1 + h, height)
    if xe > x0 and ye > y0:
        mask[y0:ye, x0:xe] = region[y0 - y1 : ye - y1, x0 - x1 : xe - x1]
    return mask


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('model', help='ONNX file exported with --preprocess-in-graph')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', default='result.jpg', help='picture to write')
    parser.add_argument('--score-thr', type=float, default=0.3, help='draw detections above')
    args = parser.parse_args()

    session, class_names = load(args.model)
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f'error: cannot read the image {args.image}')
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {'image': image[None]})))
    dets, labels = outputs['dets'][0], outputs['labels'][0]
    keep = np.nonzero((labels >= 0) & (dets[:, 4] > args.score_thr))[0]

    canvas = image.copy()
    for i in keep:
        colour = tuple(int(c) for c in np.random.default_rng(int(labels[i])).integers(64, 256, 3))
        if 'masks' in outputs:
            mask = paste_mask(outputs['masks'][0, i], dets[i, :4], *image.shape[:2])
            canvas[mask] = (0.6 * canvas[mask] + 0.4 * np.array(colour)).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(v)) for v in dets[i, :4])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        label = int(labels[i])
        name = class_names[label] if label < len(class_names) else str(label)
        cv2.putText(
            canvas,
            f'{name} {dets[i, 4]:.2f}',
            (x1, max(y1 - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
        print(f'{name:<12} {dets[i, 4]:.3f}  box {[round(float(v), 1) for v in dets[i, :4]]}')
    if not cv2.imwrite(args.out_file, canvas):
        sys.exit(f'error: cannot write {args.out_file}')
    print(f'{len(keep)} detections above {args.score_thr} drawn to {args.out_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
