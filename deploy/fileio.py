"""Writing output files so that a crash or Ctrl-C never leaves a truncated one behind.

Every output goes to a temporary name in the same folder, ``.<name>.<pid>.<random>.tmp``, and is
renamed to its real name only when complete (and, for exports, verified). The temporary name says
which output it belongs to and which process wrote it, so the temporaries a killed run left
behind are recognised and removed by the next run that writes the same output. Finished files get
the usual permissions (``0666`` less the umask), not ``mkstemp``'s private ``0600``.

The same rule covers working folders (:func:`temporary_folder`: quantisation, converted-model
caches): ``.<name>.<pid>.<random>.tmp/`` beside what they are for, removed when the block ends
and, after a SIGKILL, by the next run. A file that must pass a check before it replaces the
previous one goes through :func:`publish` (verify-before-replace). SIGTERM and SIGHUP end a tool
the way Ctrl-C does (:func:`terminate_like_interrupt`), so every ``finally`` and ``with`` block
cleans up.
"""

import contextlib
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` whose writing process is gone; return them."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f'.{path.name}.*.tmp'):
        parts = tmp.name[len(path.name) + 2 : -len('.tmp')].split('.')
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        if int(parts[0]) != os.getpid() and not _pid_alive(int(parts[0])):
            with contextlib.suppress(OSError):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
    return removed


def staging_path(path: str | Path) -> Path:
    """A new temporary name for ``path`` in its folder (created), stale ones cleaned first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    return path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')


def commit(tmp: str | Path, path: str | Path) -> Path:
    """Give ``tmp`` the permissions of a new file (``0666`` less the umask) and rename it to
    ``path`` (atomic on one file system: readers see the old file or the complete new one)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)


def discard(tmp: str | Path) -> None:
    """Remove a temporary, if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary path for a writer that wants a file name (``onnx.save``, ``savefig``):
    renamed to ``path`` when the block completes, removed if it fails."""
    tmp = staging_path(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        discard(tmp)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder, renamed to
    ``path`` when the block completes and removed if it fails. Parent folders are created."""
    path = Path(path)
    tmp = staging_path(path)
    try:
        with open(tmp, 'xb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextlib.contextmanager
def temporary_folder(path: str | Path) -> Iterator[Path]:
    """A working folder for ``path`` (``.<name>.<pid>.<random>.tmp/`` beside it), removed with
    everything in it when the block ends, however it ends; stale ones are cleaned first."""
    folder = staging_path(path)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_temporary(path: str | Path) -> bool:
    """``path`` is a temporary of this module (a file about to be renamed, or inside a working
    folder): caches must not be made beside it."""
    return any(part.startswith('.') and part.endswith('.tmp') for part in Path(path).parts)


def failed_verify_path(path: str | Path) -> Path:
    """Where an output that failed its verification is kept: ``<stem>.failed-verify<suffix>``."""
    path = Path(path)
    return path.with_name(f'{path.stem}.failed-verify{path.suffix}')


def publish(tmp: str | Path, path: str | Path, verified: bool) -> Path:
    """Verify-before-replace: a verified ``tmp`` replaces ``path``; an unverified one is kept as
    :func:`failed_verify_path` and the previous ``path`` stays as it was. Returns where it went."""
    return commit(tmp, path if verified else failed_verify_path(path))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def terminate_like_interrupt() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (a no-op elsewhere:
    only the main thread may set handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _raise_terminated)
