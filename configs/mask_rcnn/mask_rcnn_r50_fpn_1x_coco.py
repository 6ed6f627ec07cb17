# Mask R-CNN R-50-FPN, 1x schedule on COCO (MMDetection: mask_rcnn_r50_fpn_1x_coco, 38.2 box / 34.7
# mask AP).
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]
