"""What every command-line tool shares: clean one-line errors, help with defaults, and the flags
that mean the same everywhere."""

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import DeployError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` states each option's default once, where it tells something, and the
    description keeps its line breaks.

    No ``(default: ...)`` is added to a help text that already speaks of its default, to a
    required option, to an on/off flag (``store_true``: its default is "not given", and
    ``--per-tensor`` storing False into ``per_channel`` would read "default: True"), nor where
    the default is ``None`` or empty (the option is simply off).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if 'default' in text.lower() or not _shows_default(action):
            return text
        return f'{text} (default: {_default_text(action.default)})'


def _shows_default(action: argparse.Action) -> bool:
    """Whether ``action``'s default is worth a ``(default: ...)``."""
    default = action.default
    if action.required or action.nargs == 0 or default is argparse.SUPPRESS:
        return False
    if default is None or isinstance(default, bool):
        return False
    return not (isinstance(default, (list, tuple, dict, str)) and not default)


def _default_text(default) -> str:
    """A default as it would be typed on the command line."""
    if isinstance(default, (list, tuple)):
        return ' '.join(map(str, default))
    return str(default)


class ArgumentParser(argparse.ArgumentParser):
    """The tools' parser: defaults in ``--help``, and a bad command line is one ``error:`` line
    (exit 2) like every other input error, not argparse's usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Positionals may come after options (``CFG --exporter dynamo CKPT``), as MMDetection's
        tools accept and scripts written for them do."""
        return self.parse_intermixed_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--allow-key-mismatch``: load a checkpoint whose keys do not all match the model."""
    parser.add_argument(
        '--allow-key-mismatch',
        action='store_true',
        help='load a checkpoint even if keys are missing, unexpected or mis-shaped (they are '
        'listed); by default that is an error',
    )
    # Kept for old command lines: strict loading is now the default.
    parser.add_argument('--strict', action='store_true', help=argparse.SUPPRESS)
    return parser


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line. An error raised in a data-loading worker reaches the
    main process re-wrapped with the worker's traceback in its text; only the original message
    (its last line) is the user's business."""
    text = str(err)
    if 'Original Traceback' in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    return ' '.join(text.split())


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit with its code; a :class:`DeployError` becomes ``error: ...`` + exit 2.

    Set ``DEPLOY_DEBUG=1`` to see the full traceback instead. On a busy machine PyTorch's
    OpenMP threads wait passively (:mod:`deploy.threads`).
    """
    from ..fileio import Terminated, terminate_like_interrupt
    from ..threads import passive_openmp_when_busy

    passive_openmp_when_busy()
    terminate_like_interrupt()
    try:
        code = main()
    except DeployError as err:
        if os.environ.get('DEPLOY_DEBUG'):
            raise
        print(f'error: {one_line(err)}', file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a path the checks could not foresee (disk full, permissions)
        if os.environ.get('DEPLOY_DEBUG'):
            raise
        where = f': {err.filename}' if err.filename else ''
        print(f'error: {err.strerror or err}{where}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        # Every finally/with block has run: temporaries are gone. 128 + signal number.
        signum = stop.signum if isinstance(stop, Terminated) else 2
        print('interrupted' if signum == 2 else f'terminated ({stop})', file=sys.stderr)
        sys.exit(128 + signum)
    sys.exit(code or 0)
