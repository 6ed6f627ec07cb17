# 3.x file whose only top-level test_cfg is a runner loop: it must not be read as the model's.
model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=50))
test_cfg = dict(type='TestLoop')
