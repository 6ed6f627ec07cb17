# YOLOX-x (MMDetection 3.x config; box AP 50.9): YOLOX-s deeper and wider.
_base_ = './yolox_s_8xb8-300e_coco.py'
model = dict(
    backbone=dict(deepen_factor=1.33, widen_factor=1.25),
    neck=dict(in_channels=[320, 640, 1280], out_channels=320, num_csp_blocks=4),
    bbox_head=dict(in_channels=320, feat_channels=320),
)
