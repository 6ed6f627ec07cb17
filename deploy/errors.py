"""Errors that the tools report as one clean line (``error: ...``) instead of a traceback."""


class DeployError(Exception):
    """Base class: a problem with the user's input, described well enough to fix it."""


class ConfigError(DeployError):
    """A config file is missing, malformed, or lacks a key the pipeline needs."""


class CheckpointError(DeployError):
    """A checkpoint is missing, unreadable, or does not match the model."""


class ImageError(DeployError):
    """An image file is missing or does not decode."""


class ExportError(DeployError):
    """The model cannot be exported with the requested settings (e.g. opset too low for an op)."""


class BackendError(DeployError):
    """A backend cannot load or run a model file (corrupt file, shape outside a profile, ...)."""


class BackendUnavailable(BackendError):
    """The backend works, but not on this machine with these settings (e.g. BF16 on a CPU
    without BF16 instructions): a regression row reports it as skipped, not failed."""
