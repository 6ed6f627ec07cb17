"""The ``detdeploy`` command line: every tool as a subcommand, with the tool's own flags, help
and output."""

import subprocess
import sys

import pytest
from conftest import ROOT, call_tool

from deploy.commands import COMMANDS, Command, register


def detdeploy(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    """``detdeploy ARGS`` as the console script runs it (``python -m deploy`` is the same main)."""
    command = [sys.executable, '-m', 'deploy', *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def tool(script, *args, cwd=ROOT) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / script), *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_console_script_is_declared():
    assert "'detdeploy=deploy.commands:main'" in (ROOT / 'setup.py').read_text()


def test_help_lists_every_command_and_each_one_loads():
    done = detdeploy('--help')
    assert done.returncode == 0
    for name in COMMANDS:
        assert f'  {name} ' in done.stdout
    assert {'export', 'test', 'quantize', 'benchmark', 'demo', 'train'} <= set(COMMANDS)
    # every tool loaded in a fresh interpreter, as the console script loads one
    probe = (
        'from deploy.commands import COMMANDS\n'
        'for name, command in COMMANDS.items():\n'
        '    assert callable(command.load().main), name\n'
        "print('loaded', len(COMMANDS))"
    )
    loaded = subprocess.run(
        [sys.executable, '-c', probe], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == f'loaded {len(COMMANDS)}'


def test_a_subcommand_has_exactly_its_tools_flags():
    ours = detdeploy('export', '--help')
    theirs = tool('tools/pytorch2onnx.py', '--help')
    assert ours.returncode == theirs.returncode == 0
    # argparse wraps the usage lines under the program name: compare the words
    assert ours.stdout.split()[:3] == ['usage:', 'detdeploy', 'export']
    assert ours.stdout.split()[3:] == theirs.stdout.split()[2:]
    assert '--dynamic-export' in ours.stdout


def test_a_subcommand_runs_with_the_tools_output(tmp_path):
    args = [
        'demo/demo.jpg',
        'configs/bundled/retinanet_r18_tiny_synthetic.py',
        'checkpoints/retinanet_r18_tiny_synthetic.pth',
    ]
    ours = detdeploy('demo', *args, '--out-file', tmp_path / 'a.jpg')
    theirs = call_tool('image_demo.py', *args, '--out-file', tmp_path / 'b.jpg', cwd=ROOT)
    assert ours.returncode == theirs.code == 0, ours.stderr[-2000:]
    assert ours.stdout.replace('a.jpg', 'b.jpg') == theirs.stdout
    assert (tmp_path / 'a.jpg').read_bytes() == (tmp_path / 'b.jpg').read_bytes()


def test_bad_command_lines_are_one_line():
    unknown = detdeploy('exprot')
    assert unknown.returncode != 0 and unknown.stdout == ''
    assert unknown.stderr.strip() == (
        "error: unknown command 'exprot': did you mean export? (see detdeploy --help)"
    )
    flag = detdeploy('quantize', '--no-such-flag')
    assert flag.returncode == 2 and len(flag.stderr.strip().splitlines()) == 1
    assert 'detdeploy quantize --help' in flag.stderr


def test_a_new_tool_registers_as_a_subcommand():
    command = register(Command('hello', 'a module command', module='deploy.commands'))
    try:
        assert COMMANDS['hello'].load().PROG == 'detdeploy'
        with pytest.raises(ValueError, match='already has'):
            register(command)
    finally:
        del COMMANDS['hello']
