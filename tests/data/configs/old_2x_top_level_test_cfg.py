# An old MMDetection 2.x file: the model's test_cfg lives at the top level (two-stage layout),
# and the test pipeline only as the top-level test_pipeline (no data.test).
model = dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=50))
test_cfg = dict(
    rpn=dict(
        nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0
    ),
    rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100),
)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', img_scale=(1000, 600), keep_ratio=True),
    dict(type='Normalize', mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img']),
]
