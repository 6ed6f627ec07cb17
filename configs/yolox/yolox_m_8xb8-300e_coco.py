# YOLOX-m (MMDetection 3.x config; box AP 46.9): YOLOX-s deeper and wider.
_base_ = './yolox_s_8xb8-300e_coco.py'
model = dict(
    backbone=dict(deepen_factor=0.67, widen_factor=0.75),
    neck=dict(in_channels=[192, 384, 768], out_channels=192, num_csp_blocks=2),
    bbox_head=dict(in_channels=192, feat_channels=192),
)
