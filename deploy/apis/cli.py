"""What every command-line tool shares: clean one-line errors and the repository on sys.path."""

import sys
from collections.abc import Callable

from ..errors import DeployError


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit with its code; a :class:`DeployError` becomes ``error: ...`` + exit 2.

    Set ``DEPLOY_DEBUG=1`` to see the full traceback instead.
    """
    import os

    try:
        code = main()
    except DeployError as err:
        if os.environ.get('DEPLOY_DEBUG'):
            raise
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
