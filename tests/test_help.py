"""Every tool's ``--help``: each default stated once, where it tells something.

The tools run in this process (``runpy``), so the check costs the imports once, not a
Python start per tool."""

import argparse
import contextlib
import io
import re
import runpy
import sys

import pytest
from conftest import ROOT

from deploy.apis.cli import HelpFormatter

TOOLS = sorted(
    str(p.relative_to(ROOT)) for p in [*ROOT.glob('tools/**/*.py'), *ROOT.glob('demo/*.py')]
)
#: defaults that say nothing or mislead ("--per-tensor ... (default: True)")
MEANINGLESS = ('(default: None)', '(default: True)', '(default: False)', '(default: ())')


def _help_of(tool: str, monkeypatch) -> tuple[str, list[argparse.ArgumentParser]]:
    """``tool --help``'s text and the parsers that printed it."""
    parsers: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.format_help

    def recording(self):
        parsers.append(self)
        return original(self)

    monkeypatch.setattr(argparse.ArgumentParser, 'format_help', recording)
    monkeypatch.setattr(sys, 'argv', [tool, '--help'])
    monkeypatch.setenv('COLUMNS', '100')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / tool), run_name='__main__')
    assert exit_info.value.code in (0, None), tool
    return out.getvalue(), parsers


def _option_blocks(text: str) -> dict[str, str]:
    """Each argument's help, whitespace collapsed, by its first line's name."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.split('options:', 1)[-1].splitlines():
        match = re.match(r'  (\S+)', line)
        if match:
            name = match.group(1)
            blocks[name] = line
        elif name and line.startswith('   '):
            blocks[name] += line
    return {k: ' '.join(v.split()) for k, v in blocks.items()}


@pytest.mark.parametrize('tool', TOOLS)
def test_help_states_each_default_once(tool, monkeypatch):
    text, parsers = _help_of(tool, monkeypatch)
    assert parsers and 'usage:' in text, tool
    flat = ' '.join(text.split())
    for phrase in MEANINGLESS:
        assert phrase not in flat, f'{tool}: {phrase}'
    for name, block in _option_blocks(text).items():
        assert block.lower().count('default') <= 1, f'{tool} {name}: {block}'
    parser = parsers[0]
    for action in parser._actions:
        if action.required and action.option_strings:
            block = _option_blocks(text).get(action.option_strings[0], '')
            assert 'default' not in block.lower(), f'{tool}: required {block}'
    # The tools built on the package share its formatter (plain argparse shows no defaults).
    if issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter):
        assert issubclass(parser.formatter_class, HelpFormatter), tool


def test_formatter_rules():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument('--out', required=True, help='file to write')
    parser.add_argument('--per-tensor', dest='per_channel', action='store_false', help='per tensor')
    parser.add_argument('--iters', type=int, default=20, help='timed runs')
    parser.add_argument('--thr', type=float, default=0.7, help='threshold (default 0.7)')
    parser.add_argument(
        '--backends', nargs='+', default=('onnxruntime', 'openvino'), help='engines'
    )
    parser.add_argument('--skip', nargs='+', default=(), help='names')
    flat = ' '.join(parser.format_help().split())
    assert 'file to write (default' not in flat and 'per tensor (default' not in flat
    assert 'timed runs (default: 20)' in flat
    assert flat.count('0.7') == 1
    assert 'engines (default: onnxruntime openvino)' in flat and 'names (default' not in flat
