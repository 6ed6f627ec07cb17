# FCOS with 4 images per GPU on 4 GPUs; the model and its checkpoint are the 1x config's
# (fcos_r50_caffe_fpn_gn-head_1x_coco-821213aa.pth).
_base_ = 'fcos_r50_caffe_fpn_gn-head_1x_coco.py'
data = dict(samples_per_gpu=4, workers_per_gpu=4)
