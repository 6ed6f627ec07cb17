# MMDetection's 24-epoch schedule. Deployment never trains; this exists so config chains resolve.
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=None)
lr_config = dict(
    policy='step', warmup='linear', warmup_iters=500, warmup_ratio=0.001, step=[16, 22]
)
runner = dict(type='EpochBasedRunner', max_epochs=24)
