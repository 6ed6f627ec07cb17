"""``python -m deploy COMMAND [flags]``: the ``detdeploy`` command line."""

from .commands import main

main()
