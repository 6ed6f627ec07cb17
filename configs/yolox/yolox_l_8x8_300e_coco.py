# YOLOX-l, MMDetection 2.x config (3.x: yolox_l_8xb8-300e_coco.py): YOLOX-s deeper and wider.
_base_ = './yolox_s_8x8_300e_coco.py'
model = dict(
    backbone=dict(deepen_factor=1.0, widen_factor=1.0),
    neck=dict(in_channels=[256, 512, 1024], out_channels=256, num_csp_blocks=3),
    bbox_head=dict(in_channels=256, feat_channels=256),
)
