"""A tensor reader for the divergence finder's crash isolation: it ends its process, as OpenVINO
can on some tensors of a quantised graph, whenever it is asked for the tensor ``boom``."""

import os

import numpy as np


def read_or_crash(engine, model_bytes, names, feeds, threads):
    if 'boom' in names:
        os.abort()
    return [[np.full(3, float(len(name))) for name in names] for _ in feeds]
