"""Reading a pickle the tool did not just write itself (a results file, a checkpoint).

A pickle can name any importable callable and have it called on load (``os.system``, ``exec``):
plain ``pickle.load`` of a received file runs whatever it says. Every reader in the project goes
through :func:`load_pickle` (or :func:`deploy.models.checkpoint.load_checkpoint_file` for
checkpoints), which resolves only the allow-list of
:class:`deploy.models.checkpoint.RestrictedUnpickler`: containers, numpy arrays and scalars,
tensors, inert placeholders. Anything else is refused before it is called.
"""

import pickle
from pathlib import Path
from typing import Any

from .errors import DeployError


def load_pickle(path: str | Path, what: str) -> Any:
    """The object in the pickle file ``path`` (``what`` names it in errors), restricted."""
    from .models.checkpoint import RefusedGlobalError, restricted_pickle

    try:
        with open(path, 'rb') as f:
            return restricted_pickle.load(f)
    except RefusedGlobalError as err:
        raise DeployError(
            f'{path}: refusing to load the {what}: the pickle references `{err.global_name}`, '
            'which is not allowed (only containers, numbers, strings and numpy arrays are)'
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DeployError(f'{path} is not a {what} (corrupt or truncated?): {err}') from None
