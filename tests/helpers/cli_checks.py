"""Checks that every bad-input test makes of a tool run (an ``Outcome`` of ``call_tool``)."""

from __future__ import annotations

import re
from pathlib import Path

NAMED = re.compile(r'^(warning|note): ')


def one_line_error(outcome, *needles: str, code: int = 2) -> str:
    """The run exited ``code`` with no traceback, and its last stderr line is the only
    ``error:`` line and names every needle; that line is returned."""
    text = outcome.stderr + outcome.stdout
    assert 'Traceback' not in text, text[-3000:]
    assert outcome.code == code, (outcome.code, outcome.stderr[-3000:], outcome.stdout[-2000:])
    lines = [line for line in outcome.stderr.replace('\r', '\n').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error: ')]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.stderr
    for needle in needles:
        assert needle in errors[0], f'{needle!r} not in {errors[0]!r}'
    return errors[0]


def named_lines(outcome) -> list[str]:
    """The ``warning:`` and ``note:`` lines of a run (stderr and stdout)."""
    lines = (outcome.stderr + '\n' + outcome.stdout).replace('\r', '\n').splitlines()
    return [line for line in lines if NAMED.match(line)]


def temporaries(*folders: Path) -> list[Path]:
    """Files or folders under ``folders`` that look like a temporary (``*.tmp``, ``tmp*``)."""
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            found += [
                p
                for p in Path(folder).rglob('*')
                if p.name.endswith('.tmp') or p.name.startswith(('tmp', '.tmp'))
            ]
    return found
