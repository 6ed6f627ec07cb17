"""Necks, registered under MMDetection's type names."""

from .fpn import FPN

__all__ = ['FPN']
