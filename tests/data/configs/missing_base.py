# Inherits from a file that does not exist.
_base_ = ['./does_not_exist.py']
model = dict(type='RetinaNet')
