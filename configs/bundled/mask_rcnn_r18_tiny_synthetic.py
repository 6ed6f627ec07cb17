"""Mask R-CNN with a narrow ResNet-18 (base 16 channels) trained on the generated synthetic COCO
set: the project's bundled two-stage model with masks (checkpoint a few MB).

As MMDetection fine-tunes from an ImageNet backbone, the backbone starts from the bundled
RetinaNet's (trained on the same training split, see retinanet_r18_tiny_synthetic.py), with the
stem and first stage frozen and BatchNorm statistics kept: a CPU cannot afford to train a
two-stage model from scratch in minutes.

Trained here: 6 epochs, box AP 75.3 and mask AP 76.3 on the generated val split (50 images),
about 15 min on 2 CPU cores (this checkpoint: epoch 1, then the rest with --resume
work_dirs/mask_rcnn_r18_tiny_synthetic/latest.pth). Reproduce with:

    python tools/dataset/generate_synthetic_coco.py --out-dir data/synthetic_coco
    # checkpoints/retinanet_r18_tiny_synthetic.pth first (see its config), then:
    python tools/train.py configs/bundled/mask_rcnn_r18_tiny_synthetic.py \
        --work-dir work_dirs/mask_rcnn_r18_tiny_synthetic --seed 0 --threads 1 --workers 1 \
        --out checkpoints/mask_rcnn_r18_tiny_synthetic.pth

Evaluate:

    python tools/test.py configs/bundled/mask_rcnn_r18_tiny_synthetic.py \
        checkpoints/mask_rcnn_r18_tiny_synthetic.pth --backend pytorch --eval bbox segm
"""

_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# The generated set's classes, in category-id order (tools/dataset/generate_synthetic_coco.py).
classes = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
num_classes = len(classes)
width = 64  # FPN, RPN and RoI feature channels

model = dict(
    backbone=dict(
        depth=18,
        base_channels=16,
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            prefix='backbone.',
            checkpoint='checkpoints/retinanet_r18_tiny_synthetic.pth',
        ),
    ),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=width),
    rpn_head=dict(
        in_channels=width,
        feat_channels=width,
        # Objects are 15-250 px at this input size: 24 px anchors at stride 4 up to 384 px.
        anchor_generator=dict(scales=[6]),
    ),
    roi_head=dict(
        # A fixed 2x2 sampling grid (Detectron2's choice) instead of the adaptive one: the same
        # accuracy here, and every RoI shares one grid, which is much faster on CPU.
        bbox_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2), out_channels=width
        ),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=2), out_channels=width
        ),
        mask_head=dict(
            num_convs=2, in_channels=width, conv_out_channels=width, num_classes=num_classes
        ),
    ),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        # fewer RoIs per image than MMDetection's 512: a few objects per image, CPU training
        rcnn=dict(sampler=dict(num=128)),
    ),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)),
)

img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
img_scale = (416, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', img_scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks']),
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

# Short schedule for CPU training.
optimizer = dict(_delete_=True, type='AdamW', lr=0.002, weight_decay=0.0001)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(
    _delete_=True,
    policy='CosineAnnealing',
    by_epoch=False,
    min_lr_ratio=0.05,
    warmup='linear',
    warmup_iters=100,
    warmup_ratio=0.01,
)
runner = dict(type='EpochBasedRunner', max_epochs=6)
