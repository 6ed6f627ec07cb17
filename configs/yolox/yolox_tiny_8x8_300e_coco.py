# YOLOX-tiny, MMDetection 2.x config (3.x: yolox_tiny_8xb8-300e_coco.py): narrower, tested at 416.
_base_ = './yolox_s_8x8_300e_coco.py'
model = dict(
    random_size_range=(10, 20),
    backbone=dict(deepen_factor=0.33, widen_factor=0.375),
    neck=dict(in_channels=[96, 192, 384], out_channels=96),
    bbox_head=dict(in_channels=96, feat_channels=96),
)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(416, 416),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
            dict(type='DefaultFormatBundle'),
            dict(type='Collect', keys=['img']),
        ],
    ),
]
data = dict(val=dict(pipeline=test_pipeline), test=dict(pipeline=test_pipeline))
