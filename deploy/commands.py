"""``detdeploy``: one command line for every tool, ``detdeploy COMMAND [flags]``.

Each subcommand is a tool of the repository (``detdeploy export`` is ``tools/pytorch2onnx.py``):
its own parser and ``main`` run it, so the flags, the help and the output are the tool's, and
``python tools/<tool>.py`` keeps working as it is. A new tool becomes a subcommand with one
:func:`register` call (a repository script or an importable module with ``main(argv)``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PROG = 'detdeploy'
#: the checkout the tools live in (the command line runs an editable install's tools)
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``script`` (a file of the repository, e.g. ``tools/test.py``) or ``module``
    (an importable module) whose ``main(argv)`` runs it."""

    name: str
    summary: str
    script: str | None = None
    module: str | None = None

    def load(self) -> ModuleType:
        """The tool's module (its ``if __name__ == '__main__'`` block does not run)."""
        if self.module is not None:
            return importlib.import_module(self.module)
        path = ROOT / self.script
        if not path.is_file():
            raise SystemExit(
                f'error: {PROG} {self.name} runs {self.script} of the source checkout, which is '
                f'not at {ROOT}: install the package with pip install -e . from the repository'
            )
        spec = importlib.util.spec_from_file_location(f'detdeploy_{path.stem}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


#: every subcommand, in the order ``--help`` lists them
COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand (a name may be registered once)."""
    if command.name in COMMANDS:
        raise ValueError(f'{PROG} already has a command {command.name!r}')
    if (command.script is None) == (command.module is None):
        raise ValueError(f'command {command.name!r}: give a script or a module, not both')
    COMMANDS[command.name] = command
    return command


for _command in (
    Command(
        'deploy',
        'export, quantise, convert and check a model into one folder',
        'tools/deploy_model.py',
    ),
    Command('export', 'export a checkpoint to ONNX and verify it', 'tools/pytorch2onnx.py'),
    Command('test', 'run a model on the test set and evaluate it (COCO AP)', 'tools/test.py'),
    Command('quantize', 'quantise an ONNX file to INT8 and check it', 'tools/quantize.py'),
    Command('tensorrt', 'build a TensorRT engine from an ONNX file', 'tools/onnx2tensorrt.py'),
    Command('benchmark', 'time models on backends (JSON report)', 'tools/benchmark.py'),
    Command('demo', "draw a model's detections on an image", 'demo/image_demo.py'),
    Command('train', 'train a model of the zoo', 'tools/train.py'),
    Command(
        'regression', 'AP of every backend against PyTorch (CI job)', 'tools/regression_test.py'
    ),
    Command('quickstart', 'the bundled models end to end, with a report', 'tools/quickstart.py'),
):
    register(_command)


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f'  {name:<{width}}  {c.summary}' for name, c in COMMANDS.items()]
    return (
        f'usage: {PROG} COMMAND [flags]   ({PROG} COMMAND --help: the flags of one)\n\n'
        'Deploy object detectors: every tool of the project behind one command.\n\n'
        'commands:\n' + '\n'.join(lines) + '\n'
    )


@contextlib.contextmanager
def _program_name(name: str) -> Iterator[None]:
    """The tool's parser names itself ``detdeploy COMMAND`` (argparse reads ``sys.argv[0]``)."""
    saved = sys.argv[0] if sys.argv else ''
    if sys.argv:
        sys.argv[0] = name
    else:
        sys.argv.append(name)
    try:
        yield
    finally:
        sys.argv[0] = saved


def main(argv: list[str] | None = None) -> None:
    """Run ``detdeploy COMMAND [flags]``; exits with the tool's code."""
    from .apis.cli import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        (sys.stdout if argv else sys.stderr).write(usage())
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f'did you mean {close[0]}? ' if close else ''
        sys.exit(f'error: unknown command {name!r}: {hint}(see {PROG} --help)')
    module = COMMANDS[name].load()
    with _program_name(f'{PROG} {name}'):
        run_cli(lambda: module.main(rest))


if __name__ == '__main__':
    main()
