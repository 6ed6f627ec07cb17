# Cascade Mask R-CNN R-50-FPN, 1x schedule on COCO (MMDetection: cascade_mask_rcnn_r50_fpn_1x_coco,
# 41.2 box / 35.9 mask AP).
_base_ = [
    '../_base_/models/cascade_mask_rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]
