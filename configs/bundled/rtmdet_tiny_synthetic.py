"""RTMDet with a narrow CSPNeXt (0.1875 of RTMDet-l's widths, one block per stage), trained
from scratch on the generated synthetic COCO set: the project's bundled real-time detector and
the model its INT8 accuracy is measured on (checkpoint a few MB).

Reproduce the shipped checkpoint:

    python tools/dataset/generate_synthetic_coco.py --out-dir data/synthetic_coco
    python tools/train.py configs/bundled/rtmdet_tiny_synthetic.py \
        --work-dir work_dirs/rtmdet_tiny_synthetic --seed 0 --threads 1 --workers 1 \
        --out checkpoints/rtmdet_tiny_synthetic.pth

(20 epochs x 50 iterations of 8 images: 31 min on 2 CPU cores shared with other jobs, 60 to
170 s per epoch depending on their load.)

Evaluate (val split, 50 images): box AP 0.624, AP50 0.843, AP75 0.731:

    python tools/test.py configs/bundled/rtmdet_tiny_synthetic.py \
        checkpoints/rtmdet_tiny_synthetic.pth --backend pytorch --eval bbox

The test pipeline is RTMDet's: keep-ratio resize into 320x320, pad bottom/right to 320x320 with
the raw value 114. Training pads each batch to its largest image, rounded up to a multiple of
32, with the normalised zero instead: under 0.2 apart in the network's input units.
"""

_base_ = ['../rtmdet/rtmdet_tiny_8xb32-300e_coco.py']

# The generated set's classes, in category-id order (tools/dataset/generate_synthetic_coco.py).
classes = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')
num_classes = len(classes)

model = dict(
    backbone=dict(deepen_factor=0.167, widen_factor=0.1875, norm_cfg=dict(type='BN')),
    neck=dict(in_channels=[48, 96, 192], out_channels=48, norm_cfg=dict(type='BN')),
    bbox_head=dict(
        num_classes=num_classes, in_channels=48, feat_channels=48, norm_cfg=dict(type='BN')
    ),
    test_cfg=dict(nms_pre=1000, max_per_img=100),
)

data_root = 'data/synthetic_coco/'
img_scale = (320, 320)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='Pad', size=img_scale, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=classes),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline),
)
test_dataloader = val_dataloader

# Short schedule for CPU training: AdamW converges from scratch in a few epochs.
optimizer = dict(type='AdamW', lr=0.002, weight_decay=0.05)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(
    policy='CosineAnnealing',
    by_epoch=False,
    min_lr_ratio=0.05,
    warmup='linear',
    warmup_iters=100,
    warmup_ratio=0.01,
)
runner = dict(type='EpochBasedRunner', max_epochs=20)
