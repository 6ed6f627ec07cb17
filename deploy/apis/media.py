"""The demo on what people have: one image, a folder of images or a video file, through one
backend session loaded once (``demo/image_demo.py``).

Every picture and the video are written under a temporary name and renamed when complete; an
error, Ctrl-C or SIGTERM part-way through a video leaves no file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageError
from ..fileio import commit, discard
from ..finite import check_outputs_finite
from ..structures import ClassificationResult, DetectionResult
from .checks import IMAGE_SUFFIXES

# The backends, the config reader and the tasks are imported where a model is loaded: the
# demo's --help and its input checks stay instant.
Logger = Callable[[str], None]
PathLike = str | os.PathLike

#: containers the demo reads as videos, and the codec it writes each with
VIDEO_CODECS = {'.mp4': 'mp4v', '.avi': 'MJPG', '.mov': 'mp4v', '.mkv': 'mp4v'}

Result = DetectionResult | ClassificationResult


@dataclass
class LoadedModel:
    """A model file on one backend, loaded once and run on decoded BGR images."""

    runner: object
    plan: object
    #: the model file and backend, named when the model returns non-finite numbers
    source: str = ''

    @classmethod
    def load(
        cls,
        config: PathLike | None,
        model_file: PathLike,
        backend: str,
        *,
        cfg_options: dict | None = None,
        device: str = 'cpu',
        strict: bool = True,
        precision: str | None = None,
        logger: Logger = print,
    ) -> LoadedModel:
        from ..backends import build_backend
        from ..config import load_config
        from .contract import plan_run

        # no config: the model file's own spec says how to run it (no config code is run)
        cfg = None if config is None else load_config(config, cfg_options)
        if cfg is None and backend == 'pytorch':
            raise ConfigError('the pytorch backend needs the config to build the model')
        extra = {} if precision is None else dict(precision=precision)
        runner = build_backend(backend, model_file, cfg=cfg, device=device, strict=strict, **extra)
        return cls(runner, plan_run(runner, cfg, model_file, logger), f'{model_file} ({backend})')

    @property
    def class_names(self) -> tuple | None:
        return self.plan.spec.class_names

    def __call__(self, image: np.ndarray) -> Result:
        """The result of one BGR image, in its pixel coordinates."""
        from ..datasets.pipeline import collate, network_inputs
        from ..tasks import task_of_spec

        img, metas = collate([self.plan.pipeline()(image)])
        outputs = self.runner(network_inputs(img, metas))
        check_outputs_finite(outputs, self.source)
        return task_of_spec(self.plan.spec).image_result(outputs, metas, self.plan.result_filter)


def is_video(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_CODECS


def folder_images(folder: PathLike) -> list[Path]:
    """The images of ``folder`` (not its sub-folders), by name; none is an error."""
    images = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in the folder {folder}')
    return images


def draw_folder(
    folder: PathLike,
    out_dir: PathLike,
    model: LoadedModel,
    draw: Callable[[np.ndarray, Result], np.ndarray],
) -> list[tuple[Path, Result]]:
    """Each image of ``folder`` drawn into ``out_dir`` under its own name."""
    from ..datasets.pipeline import load_image
    from ..visualization import save_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for path in folder_images(folder):
        image = load_image(path)
        result = model(image)
        save_image(out_dir / path.name, draw(image, result))
        done.append((out_dir / path.name, result))
    return done


@dataclass
class VideoSummary:
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height)


def draw_video(
    src: PathLike,
    dst: PathLike,
    model: LoadedModel,
    draw: Callable[[np.ndarray, Result], np.ndarray],
) -> VideoSummary:
    """Every frame of the video ``src`` through ``model``, drawn into the video ``dst`` (same
    frame rate and size), written under a temporary name and renamed when complete."""
    import cv2

    capture = cv2.VideoCapture(str(src))
    try:
        if not capture.isOpened():
            raise ImageError(f'OpenCV cannot read the video {src}')
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        ok, frame = capture.read()
        if not ok:
            raise ImageError(f'the video {src} has no frame OpenCV can decode')
        height, width = frame.shape[:2]
        with _staged_video(dst) as tmp, _sigterm_as_interrupt():
            writer = cv2.VideoWriter(str(tmp), _fourcc(dst), fps, (width, height))
            if not writer.isOpened():
                raise ImageError(f'OpenCV cannot write {Path(dst).suffix} videos here: {dst}')
            try:
                frames = 0
                while ok:
                    writer.write(_fit(draw(frame, model(frame)), width, height))
                    frames += 1
                    ok, frame = capture.read()
            finally:
                writer.release()
    finally:
        capture.release()
    return VideoSummary(frames, float(fps), (width, height))


def _fourcc(path: PathLike) -> int:
    import cv2

    return cv2.VideoWriter_fourcc(*VIDEO_CODECS[Path(path).suffix.lower()])


def _fit(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """A drawn frame at the video's size (drawings of classifiers may add a margin)."""
    import cv2

    if picture.shape[:2] == (height, width):
        return picture
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)


@contextlib.contextmanager
def _staged_video(path: PathLike) -> Iterator[Path]:
    """A temporary name for a video writer in ``path``'s folder, keeping its suffix (OpenCV
    picks the container by it); renamed to ``path`` when the block completes, else removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}')
    try:
        yield tmp
        if not tmp.is_file() or not tmp.stat().st_size:
            raise ImageError(f'OpenCV wrote no video to {path}')
        commit(tmp, path)
    finally:
        discard(tmp)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (main thread only), so the clean-up of
    a half-written file runs as it does for Ctrl-C."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt
