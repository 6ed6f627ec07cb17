# Inherits the 3.x file and changes one model setting: checks _base_ resolution next to the file.
_base_ = './retinanet_3x.py'
model = dict(test_cfg=dict(score_thr=0.2))
