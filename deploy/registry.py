"""The one registry of the project.

Every buildable thing (backbones, necks, heads, detectors, anchor generators, box coders, RoI
layers) registers here under MMDetection's type name, so MMDetection configs build unchanged.
"""

from mmengine.registry import Registry

MODELS = Registry('model')
