# Faster R-CNN R-50-FPN, 1x schedule on COCO (MMDetection: faster_rcnn_r50_fpn_1x_coco,
# box AP 37.4).
_base_ = [
    '../_base_/models/faster_rcnn_r50_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]
