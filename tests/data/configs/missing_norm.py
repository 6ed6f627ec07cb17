# A test pipeline without any normalisation and no data_preprocessor.
model = dict(type='RetinaNet')
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', img_scale=(1333, 800), keep_ratio=True),
    dict(type='Collect', keys=['img']),
]
