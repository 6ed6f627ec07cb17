"""Writing output files so that a crash or Ctrl-C never leaves a truncated one behind.

Every output goes to a temporary name in the same folder, ``.<name>.<pid>.<random>.tmp``, and is
renamed to its real name only when complete (and, for exports, verified). The temporary name says
which output it belongs to and which process wrote it, so the temporaries a killed run left
behind are recognised and removed by the next run that writes the same output. Finished files get
the usual permissions (``0666`` less the umask), not ``mkstemp``'s private ``0600``.
"""

import contextlib
import os
import secrets
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
