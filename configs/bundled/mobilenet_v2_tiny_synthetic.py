"""MobileNetV2 0.5x at 64 px, trained from scratch on the generated classification set (crops of
the synthetic shapes with random hues, six classes): the project's bundled classifier.

Reproduce the shipped checkpoint:

    python tools/dataset/generate_synthetic_cls.py --out-dir data/synthetic_cls
    python tools/train.py configs/bundled/mobilenet_v2_tiny_synthetic.py \
        --work-dir work_dirs/mobilenet_v2_tiny_synthetic --seed 0 --threads 1 --workers 1 \
        --out checkpoints/mobilenet_v2_tiny_synthetic.pth

(30 epochs x 94 iterations of 32 crops: 20 min on 2 CPU cores shared with other jobs; the
last epoch's training top-1 is 97.4%. 0.7 M parameters, a 3 MB checkpoint.)

Evaluate (val split, 300 crops): top-1 95.67%, top-5 99.67%:

    python tools/test.py configs/bundled/mobilenet_v2_tiny_synthetic.py \
        checkpoints/mobilenet_v2_tiny_synthetic.pth --backend pytorch --eval accuracy
"""

_base_ = ['../_base_/models/mobilenet_v2_1x.py', '../_base_/default_runtime.py']

# The generated set's classes in label order (sorted names, as its class folders).
classes = ('circle', 'cross', 'ring', 'square', 'star', 'triangle')

model = dict(
    backbone=dict(widen_factor=0.5),
    head=dict(num_classes=len(classes), in_channels=1280, topk=(1, 5)),
)

img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', size=64, scale=(0.6, 1.0), backend='pillow'),
    dict(type='RandomFlip', flip_prob=0.5, direction='horizontal'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='ToTensor', keys=['gt_label']),
    dict(type='Collect', keys=['img', 'gt_label']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', size=(72, -1), backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img']),
]
data_root = 'data/synthetic_cls/'
data = dict(
    samples_per_gpu=32,
    workers_per_gpu=1,
    train=dict(
        type='ImageNet',
        data_prefix=data_root + 'train',
        ann_file=data_root + 'meta/train.txt',
        classes=classes,
        pipeline=train_pipeline,
    ),
    val=dict(
        type='ImageNet',
        data_prefix=data_root + 'val',
        ann_file=data_root + 'meta/val.txt',
        classes=classes,
        pipeline=test_pipeline,
    ),
    test=dict(
        type='ImageNet',
        data_prefix=data_root + 'val',
        ann_file=data_root + 'meta/val.txt',
        classes=classes,
        pipeline=test_pipeline,
    ),
)
evaluation = dict(interval=1, metric='accuracy', metric_options=dict(topk=(1, 5)))

# Short schedule for CPU training: AdamW with a cosine decay converges from scratch.
optimizer = dict(type='AdamW', lr=0.004, weight_decay=0.01)
optimizer_config = dict(grad_clip=None)
lr_config = dict(
    policy='CosineAnnealing',
    by_epoch=False,
    min_lr_ratio=0.01,
    warmup='linear',
    warmup_iters=100,
    warmup_ratio=0.1,
)
runner = dict(type='EpochBasedRunner', max_epochs=30)
