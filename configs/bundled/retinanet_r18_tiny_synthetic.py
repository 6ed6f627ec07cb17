"""RetinaNet with a narrow ResNet-18 (base 16 channels), trained from scratch on the generated
synthetic COCO set: the project's bundled single-stage model (checkpoint a few MB).

Reproduce the shipped checkpoint:

    python tools/dataset/generate_synthetic_coco.py --out-dir data/synthetic_coco
    python tools/train.py configs/bundled/retinanet_r18_tiny_synthetic.py \
        --work-dir work_dirs/retinanet_r18_tiny_synthetic --seed 0 --threads 1 --workers 1 \
        --out checkpoints/retinanet_r18_tiny_synthetic.pth

(12 epochs x 100 iterations of 4 images: 24 min on 2 CPU cores shared with other jobs, about
85 s per epoch on a quieter machine; one thread is faster than two when the cores are busy.)

Evaluate (val split, 50 images): box AP 0.685, AP50 0.934, AP75 0.826:

    python tools/test.py configs/bundled/retinanet_r18_tiny_synthetic.py \
        checkpoints/retinanet_r18_tiny_synthetic.pth --backend pytorch --eval bbox
"""

_base_ = [
    '../_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# The generated set's classes, in category-id order (tools/dataset/generate_synthetic_coco.py).
classes = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
num_classes = len(classes)

model = dict(
    backbone=dict(
        depth=18,
        base_channels=16,
        # trained from scratch: every stage and every BatchNorm learns
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None,
    ),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(
        num_classes=num_classes,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        # Objects are 15-250 px at this input size: anchors from 24 px (stride 8) up.
        anchor_generator=dict(octave_base_scale=3),
    ),
)

img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
img_scale = (416, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=img_scale,
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ],
    ),
]
data = dict(
    samples_per_gpu=4,
    workers_per_gpu=1,
    train=dict(pipeline=train_pipeline, classes=classes),
    val=dict(pipeline=test_pipeline, classes=classes),
    test=dict(pipeline=test_pipeline, classes=classes),
)

# Short schedule for CPU training: AdamW converges from scratch in a few epochs.
optimizer = dict(_delete_=True, type='AdamW', lr=0.002, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(
    _delete_=True,
    policy='CosineAnnealing',
    by_epoch=False,
    min_lr_ratio=0.05,
    warmup='linear',
    warmup_iters=200,
    warmup_ratio=0.01,
)
runner = dict(type='EpochBasedRunner', max_epochs=12)
