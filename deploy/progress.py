"""Stage-by-stage progress for the long steps (build, export, simplify, verify, benchmark).

Each stage prints one line when it ends, with its elapsed time; on a terminal a spinner with the
running time shows that a stage without a count (a minute of torch.export tracing) is alive.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator

_FRAMES = '|/-\\'


class Stages:
    """Numbered stages: ``with stages('export (dynamo)'): ...`` prints
    ``[2/4] export (dynamo) ... done in 31.2 s`` (and ``failed after`` on an error).

    Args:
        total: the number of stages, for ``[i/total]`` (0: unnumbered).
        logger: where the finished lines go (``print``-like; ``None``: silent).
        spinner: show a live spinner on stderr while a stage runs (default: when stderr is a
            terminal).
    """

    def __init__(
        self, total: int = 0, logger: Callable | None = print, spinner: bool | None = None
    ):
        self.total = total
        self.count = 0
        self.logger = logger
        self.spinner = sys.stderr.isatty() if spinner is None else spinner
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.count += 1
        label = f'[{self.count}/{self.total}] {name}' if self.total else name
        start = time.perf_counter()
        stop = threading.Event()
        thread = None
        if self.spinner and self.logger is not None:
            thread = threading.Thread(target=self._spin, args=(label, start, stop), daemon=True)
            thread.start()
        try:
            yield
        except BaseException:
            self._finish(stop, thread)
            self._log(f'{label} ... failed after {time.perf_counter() - start:.1f} s')
            raise
        self._finish(stop, thread)
        self._log(f'{label} ... done in {time.perf_counter() - start:.1f} s')

    def _log(self, line: str) -> None:
        if self.logger is not None:
            self.logger(line)

    @staticmethod
    def _finish(stop: threading.Event, thread: threading.Thread | None) -> None:
        stop.set()
        if thread is not None:
            thread.join()
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()

    @staticmethod
    def _spin(label: str, start: float, stop: threading.Event) -> None:
        for frame in itertools.cycle(_FRAMES):
            if stop.wait(0.25):
                return
            sys.stderr.write(f'\r{frame} {label} ... {time.perf_counter() - start:.0f} s')
            sys.stderr.flush()
