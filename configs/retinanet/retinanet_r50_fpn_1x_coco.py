# RetinaNet R-50-FPN, 1x schedule on COCO (MMDetection: retinanet_r50_fpn_1x_coco, box AP 36.5).
_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]
# RetinaNet trains with half of the 1x schedule's learning rate.
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
