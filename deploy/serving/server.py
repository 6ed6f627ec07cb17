"""A local Triton server on loopback ports, from the ``nvidia-pytriton`` wheel.

The wheel ships ``tritonserver`` with the Python backend only. It lives in its own environment
(``tools/serving/make_triton_env.sh`` makes ``.venv-triton``): the backend's stub embeds that
environment's Python, which needs ``numpy<2`` (the project's own environment has numpy 2) and our
package with ``onnxruntime`` to run python-backend models.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeployError

#: environment variable naming the server's environment (default ``.venv-triton`` in the checkout)
ENV_VARIABLE = 'DETDEPLOY_TRITON_ENV'
ROOT = Path(__file__).resolve().parents[2]


class ServerError(DeployError):
    """The server cannot be started, or did not become ready."""


@dataclass(frozen=True)
class ServerInstall:
    """Where the server binary, its libraries and its Python live."""

    env_dir: Path
    binary: Path
    backends: Path
    libs: Path
    python_lib: Path

    @classmethod
    def find(cls, env_dir: str | Path | None = None) -> ServerInstall | None:
        """The install in ``env_dir`` (default ``$DETDEPLOY_TRITON_ENV`` or ``.venv-triton``);
        None when there is no server binary there."""
        env_dir = Path(env_dir or os.environ.get(ENV_VARIABLE) or ROOT / '.venv-triton')
        for site in sorted(env_dir.glob('lib/python3*/site-packages')):
            server = site / 'pytriton' / 'tritonserver'
            stub = server / 'backends' / 'python' / 'triton_python_backend_stub'
            if (server / 'bin' / 'tritonserver').is_file() and stub.is_file():
                home = _venv_home(env_dir)
                return cls(
                    env_dir.resolve(),
                    server / 'bin' / 'tritonserver',
                    server / 'backends',
                    site / 'nvidia_pytriton.libs',
                    home.parent / 'lib' if home else env_dir / 'lib',
                )
        return None

    def environment(self) -> dict[str, str]:
        """The server's environment: its libraries, and the stub's Python found first on PATH
        (the stub's interpreter takes its prefix, and so ``numpy<2``, from there)."""
        env = dict(os.environ)
        libs = [str(self.python_lib), str(self.libs), env.get('LD_LIBRARY_PATH', '')]
        env['LD_LIBRARY_PATH'] = ':'.join(p for p in libs if p)
        env['PATH'] = f'{self.env_dir / "bin"}:{env.get("PATH", "")}'
        for name in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV'):
            env.pop(name, None)
        return env


def _venv_home(env_dir: Path) -> Path | None:
    """The ``home`` of a venv (the base interpreter's bin folder)."""
    cfg = env_dir / 'pyvenv.cfg'
    if not cfg.is_file():
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition('=')
        if key.strip() == 'home':
            return Path(value.strip())
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_ready(http_url: str, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """Poll ``http_url``'s readiness (every model loaded) for at most ``timeout`` seconds; False
    when the time ran out or ``process`` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            with urllib.request.urlopen(f'http://{http_url}/v2/health/ready', timeout=2) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


class LocalServer:
    """``tritonserver`` serving ``repository`` on 127.0.0.1 (free ports unless given), as a
    context manager: started and ready on entry, stopped on exit.

    Args:
        repository: the model repository.
        install: the server install (default :meth:`ServerInstall.find`).
        http_port, grpc_port: ports (0: a free one).
        log_file: where the server logs (default: ``repository/../tritonserver.log``).
        startup_timeout: seconds to wait for every model to be ready.
    """

    def __init__(
        self,
        repository: str | Path,
        install: ServerInstall | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        log_file: str | Path | None = None,
        startup_timeout: float = 120.0,
    ):
        self.repository = Path(repository).resolve()
        self.install = install or ServerInstall.find()
        if self.install is None:
            raise ServerError(
                'no Triton server installed: run tools/serving/make_triton_env.sh (it makes '
                f'.venv-triton), or point ${ENV_VARIABLE} at such an environment'
            )
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.log_file = Path(log_file or self.repository.parent / 'tritonserver.log')
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f'127.0.0.1:{self.http_port}'

    @property
    def grpc_url(self) -> str:
        return f'127.0.0.1:{self.grpc_port}'

    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            f'--model-repository={self.repository}',
            f'--backend-directory={self.install.backends}',
            '--http-address=127.0.0.1',
            f'--http-port={self.http_port}',
            '--grpc-address=127.0.0.1',
            f'--grpc-port={self.grpc_port}',
            '--allow-metrics=false',
            '--strict-readiness=true',
            '--exit-on-error=true',
            '--exit-timeout-secs=5',
        ]

    def start(self) -> LocalServer:
        if not self.repository.is_dir():
            raise ServerError(f'model repository not found: {self.repository}')
        with open(self.log_file, 'wb') as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.install.environment(),
                # its own session: a signal the server or a backend stub sends to its process
                # group must not reach the program that started it
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        if not wait_ready(self.http_url, self.startup_timeout, self.process):
            if self.process.poll() is not None:
                raise ServerError(
                    f'tritonserver exited with code {self.process.returncode}: '
                    f'{self.log_tail()} (log: {self.log_file})'
                )
            raise ServerError(
                f'tritonserver was not ready after {self.startup_timeout:.0f} s '
                f'(log: {self.log_file})'
            )

    def log_tail(self) -> str:
        """The last error line of the log (the reason a model did not load)."""
        try:
            lines = self.log_file.read_text(errors='replace').splitlines()
        except OSError:
            return ''
        # CUDA / NVML complaints are harmless on a machine without a GPU
        harmless = ('cuda', 'nvml', 'gpu')
        errors = [
            line
            for line in lines
            if (line.startswith('E') or 'error' in line.lower())
            and not any(word in line.lower() for word in harmless)
        ]
        return (errors or lines or [''])[-1].strip()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
