"""Config + checkpoint -> a ready model, the first step of every tool (deploy.models.loading)."""

from ..models.loading import init_detector

__all__ = ['init_detector']
