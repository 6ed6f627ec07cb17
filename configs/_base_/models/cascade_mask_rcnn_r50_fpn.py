# Cascade Mask R-CNN, ResNet-50 + FPN: Cascade R-CNN plus one FCN mask head per stage (a single
# mask_head dict is replicated for the three stages, as in MMDetection).
_base_ = './cascade_rcnn_r50_fpn.py'
model = dict(
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32],
            deploy_mode='nonzero',
        ),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
        ),
    ),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)),
)
