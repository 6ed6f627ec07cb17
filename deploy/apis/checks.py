"""Cheap checks of command-line arguments, run before any model is built or file written.

Each raises a :class:`~deploy.errors.DeployError` with one line naming the argument, so a typo
costs a second, not a minute of model building and export.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError

_DEVICE = re.compile(r'^(cpu|cuda(:\d+)?|gpu)$')


def check_positive(name: str, value: int | None, allow_none: bool = True) -> None:
    """``value >= 1`` (``None`` allowed unless ``allow_none`` is False)."""
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ConfigError(f'{name} must be at least 1, got {value}')


def check_non_negative(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ConfigError(f'{name} must be 0 or more, got {value}')


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist here.

    Returns the device string (``gpu`` is accepted as ``cuda``).
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f'--device must be cpu, cuda or cuda:N, got {device!r}')
    if device == 'gpu':
        device = 'cuda'
    if device.startswith('cuda'):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f'--device {device}: no CUDA GPU is available here (torch.cuda.is_available() '
                'is False); use --device cpu'
            )
        index = int(device.split(':')[1]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f'--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)'
            )
    return device


def check_output_file(path: str | os.PathLike | None, what: str = 'output file') -> Path | None:
    """An output path that can be written: not a directory, its folder writable (or creatable)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f'{what} {path} is a directory; give a file name')
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f'{what} {path}: {folder} is not a directory')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f'{what} {path}: the folder {folder} is not writable')
    return path


def check_output_dir(path: str | os.PathLike | None, what: str = 'output folder') -> Path | None:
    """A folder that exists or can be created, and can be written."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f'{what} {path} exists and is not a directory')
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f'{what} {path}: {folder} is not a writable directory')
    return path


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def check_image_output(path: str | os.PathLike | None, what: str) -> Path | None:
    """An output picture: a writable path with a suffix OpenCV encodes."""
    path = check_output_file(path, what)
    if path is not None and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(
            f'{what} {path}: {path.suffix or "no suffix"} is not an image format '
            f'({", ".join(IMAGE_SUFFIXES)})'
        )
    return path


def check_input_file(path: str | os.PathLike | None, what: str) -> Path | None:
    """An input file that exists."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f'{what} {path} is a directory, not a file')
    if not path.is_file():
        raise ConfigError(f'{what} not found: {path}')
    return path


def check_shape(shape: Sequence[int] | None) -> tuple[int, int] | None:
    """``--shape H [W]``: one or two positive integers; ``(H, W)`` (a square for one)."""
    if shape is None:
        return None
    if len(shape) not in (1, 2):
        raise ConfigError(f'--shape takes H or H W, got {len(shape)} numbers: {list(shape)}')
    if any(s < 1 for s in shape):
        raise ConfigError(f'--shape must be positive, got {list(shape)}')
    return (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])


def check_opset(opset: int) -> int:
    """An opset our graphs can use (>= 16) that the installed ``onnx`` knows."""
    from ..export.options import MIN_OPSET

    if opset < MIN_OPSET:
        raise ConfigError(
            f'--opset-version {opset} is too low: the exported ops need opset >= {MIN_OPSET} '
            '(RoiAlign coordinate_transformation_mode, NonMaxSuppression semantics); use 18'
        )
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ConfigError(
            f'--opset-version {opset} is newer than the installed onnx knows ({newest})'
        )
    return opset
