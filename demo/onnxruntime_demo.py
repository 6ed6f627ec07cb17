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
import colorsys
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


def fail(message: str) -> None:
    """One line on stderr and exit status 2, as the project's tools do for bad input."""
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def load(model_path: str) -> tuple[ort.InferenceSession, list]:
    if not Path(model_path).is_file():
        fail(f'no model file {model_path}')
    try:
        session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    except Exception as exc:  # ONNX Runtime raises its own exception types for bad files
        fail(f'ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0]}')
    if [i.name for i in session.get_inputs()] != ['image']:
        fail(f'{model_path} takes normalised tensors: export it with --preprocess-in-graph')
    try:
        spec = json.loads(session.get_modelmeta().custom_metadata_map.get('deploy', '{}'))
    except json.JSONDecodeError as exc:
        fail(f'{model_path}: its model spec is not valid JSON ({exc})')
    names = spec.get('class_names') if isinstance(spec, dict) else None
    return session, list(names) if isinstance(names, list) else []


def save(image: np.ndarray, path: Path) -> None:
    """Encode, write under a temporary name beside ``path``, then rename: no half-written file."""
    ok, encoded = cv2.imencode(path.suffix or '.jpg', image)
    if not ok:
        fail(f'OpenCV cannot write {path.suffix!r} images ({path})')
    partial = path.with_name(f'.{path.name}.partial')
    try:
        partial.write_bytes(encoded.tobytes())
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f'cannot write {path}: {exc.strerror}')


def colour_of(label: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.61803) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


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


def tag_spot(box, size, taken: list, canvas_hw) -> tuple[int, int]:
    """Where a ``size = (w, h)`` tag goes on its own box's edge: above the top, inside the top,
    inside the bottom (left-, then right-aligned), the first spot clear of earlier tags (this
    demo keeps the project's rule without importing the project)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    (w, h), (height, width) = size, canvas_hw
    spots = [(x, y) for y in (y1 - h, y1, y2 - h) for x in (x1, x2 - w)] + [(x1, y1 - h)]
    for x, y in spots:
        x, y = min(max(x, 0), max(width - w, 0)), min(max(y, 0), max(height - h, 0))
        rect = (x, y, x + w, y + h)
        if all(
            r[2] <= t[0] or r[0] >= t[2] or r[3] <= t[1] or r[1] >= t[3]
            for r in [rect]
            for t in taken
        ):
            break
    taken.append(rect)
    return rect[0], rect[1]


def draw_tag(canvas: np.ndarray, box, text: str, colour, taken: list) -> None:
    """Dark text on a filled patch of the class colour, attached to its box."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    size = (tw + 4, th + base + 3)
    x, y = tag_spot(box, size, taken, canvas.shape[:2])
    cv2.rectangle(canvas, (x, y), (x + size[0], y + size[1]), colour, -1)
    cv2.putText(canvas, text, (x + 2, y + th + 1), font, scale, (0, 0, 0), 1, cv2.LINE_AA)


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
        fail(f'cannot read the image {args.image}')
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {'image': image[None]})))
    dets, labels = outputs['dets'][0], outputs['labels'][0]
    keep = np.nonzero((labels >= 0) & (dets[:, 4] > args.score_thr))[0]

    canvas = image.copy()
    thickness = max(2, round(sum(image.shape[:2]) / 500))
    names = [class_names[k] if 0 <= k < len(class_names) else str(k) for k in labels.tolist()]
    for i in keep[::-1]:  # best last, on top
        colour = colour_of(int(labels[i]))
        if 'masks' in outputs:
            mask = paste_mask(outputs['masks'][0, i], dets[i, :4], *image.shape[:2])
            canvas[mask] = (0.6 * canvas[mask] + 0.4 * np.array(colour)).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(v)) for v in dets[i, :4])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    taken: list = []
    for i in keep:  # best first: the best detections get the best tag spots
        text = f'{names[i]} {dets[i, 4]:.2f}'
        draw_tag(canvas, dets[i, :4], text, colour_of(int(labels[i])), taken)
    for i in keep:
        print(f'{names[i]:<12} {dets[i, 4]:.3f}  box {[round(float(v), 1) for v in dets[i, :4]]}')
    save(canvas, Path(args.out_file))
    print(f'{len(keep)} detections above {args.score_thr} drawn to {args.out_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
