# MobileNetV2 1.0x on ImageNet, MMClassification 0.x config (the name the OpenMMLab conversion
# guide uses; MMPretrain 1.x renamed it mobilenet-v2_8xb32_in1k.py, next to this file).
_base_ = [
    '../_base_/models/mobilenet_v2_1x.py',
    '../_base_/datasets/imagenet_bs32_pil_resize.py',
    '../_base_/schedules/imagenet_bs256_epochstep.py',
    '../_base_/default_runtime.py',
]
