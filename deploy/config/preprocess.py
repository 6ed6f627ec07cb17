"""What the test pipeline does to an image, read from either MMDetection 2.x or 3.x configs."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PreprocessConfig:
    """Test-time pre-processing of one model.

    Attributes:
        mean, std: per-channel normalisation, in channel order *after* the optional BGR->RGB swap.
        to_rgb: swap the BGR image read by OpenCV to RGB before normalising.
        scale: target ``(long_edge, short_edge)`` for keep-ratio resize (MMCV's ``img_scale``
            convention, e.g. ``(1333, 800)``), or ``(w, h)`` when ``keep_ratio`` is False.
        keep_ratio: keep the aspect ratio when resizing.
        size_divisor: pad bottom/right so both sides are multiples of this (``None``: no pad).
        pad_value: value of padded pixels, after normalisation (MMDetection pads with 0).
    """

    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    to_rgb: bool = True
    scale: tuple[int, int] = (1333, 800)
    keep_ratio: bool = True
    size_divisor: int | None = 32
    pad_value: float = 0.0
