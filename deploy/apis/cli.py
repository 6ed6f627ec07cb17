"""What every command-line tool shares: clean one-line errors, help with defaults, and the flags
that mean the same everywhere."""

import argparse
import os
import sys
from collections.abc import Callable

from ..errors import DeployError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default, and the description keeps its line breaks."""


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


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit with its code; a :class:`DeployError` becomes ``error: ...`` + exit 2.

    Set ``DEPLOY_DEBUG=1`` to see the full traceback instead.
    """
    try:
        code = main()
    except DeployError as err:
        if os.environ.get('DEPLOY_DEBUG'):
            raise
        message = ' '.join(str(err).split())  # one line, whatever the message holds
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # a path the checks could not foresee (disk full, permissions)
        if os.environ.get('DEPLOY_DEBUG'):
            raise
        where = f': {err.filename}' if err.filename else ''
        print(f'error: {err.strerror or err}{where}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
