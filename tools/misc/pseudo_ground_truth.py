"""Turn a reference run's detections into a COCO annotation file, for AP parity without labels.

A model whose weights do not fit the data set (random weights, or a checkpoint trained on other
classes) scores about 0 AP on the real annotations, and 0.0 = 0.0 proves nothing. Scored against
the reference's own best detections, PyTorch gets high AP and a backend loses AP for every box,
score, label or mask it gets wrong:

    python tools/test.py CFG CKPT --backend pytorch --format-only work_dirs/reference.json
    python tools/misc/pseudo_ground_truth.py work_dirs/reference.json \
        data/synthetic_coco/annotations/instances_val.json work_dirs/pseudo.json --num-images 10
    python tools/test.py CFG CKPT --backend pytorch --eval bbox \
        --cfg-options data.test.ann_file=work_dirs/pseudo.json
    python tools/test.py CFG model.onnx --backend onnxruntime --eval bbox \
        --cfg-options data.test.ann_file=work_dirs/pseudo.json
"""

import json
from pathlib import Path

from deploy.apis.cli import ArgumentParser, run_cli
from deploy.errors import DeployError


def parse_args(argv=None):
    parser = ArgumentParser(description='Pseudo ground truth from reference detections')
    parser.add_argument('results', help='COCO-format results json (tools/test.py --format-only)')
    parser.add_argument('ann_file', help='the data set annotation file the results are for')
    parser.add_argument('out', help='annotation file to write')
    parser.add_argument(
        '--per-image', type=int, default=100, help='best detections kept per image (default 100)'
    )
    parser.add_argument(
        '--num-images', type=int, default=None, help='keep only the first N images (all)'
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from deploy.evaluation.pseudo_ground_truth import write_pseudo_ground_truth
    from deploy.finite import check_detections_finite

    results_file = Path(args.results)
    if not results_file.is_file():
        raise DeployError(f'results file not found: {results_file}')
    try:
        coco_results = json.loads(results_file.read_text())
    except json.JSONDecodeError as err:
        raise DeployError(f'results file {results_file} is not valid json: {err}') from err
    if not isinstance(coco_results, list):
        raise DeployError(
            f'{results_file} is not a COCO results list (as tools/test.py --format-only writes)'
        )
    check_detections_finite(coco_results, str(results_file))
    out = write_pseudo_ground_truth(
        coco_results,
        args.ann_file,
        args.out,
        per_image=args.per_image,
        num_images=args.num_images,
    )
    data = json.loads(out.read_text())
    print(f'{len(data["annotations"])} objects on {len(data["images"])} images written to {out}')
    return 0


if __name__ == '__main__':
    run_cli(main)
