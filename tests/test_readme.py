"""Every command in the README runs as written.

All ``bash`` blocks are read: each ``python tools/...`` / ``python demo/...`` command must parse
with its tool's own argument parser and name only repository files that exist. The "Your first
export" block is then run for real, in a scratch folder laid out like the repository.
"""

import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, _tool_module, call_tool
from helpers.readme import COMMANDS, README, as_tool_command

#: files the README's commands create before later commands read them
CREATED = ('work_dirs/', 'data/synthetic_coco', 'result.jpg')
TOOL_COMMANDS = [
    (section, argv)
    for section, argv in ((s, as_tool_command(a)) for s, a in COMMANDS)
    if argv[0] in ('python', 'python3') and argv[1].endswith('.py')
]


def test_the_readme_starts_with_the_two_commands():
    first = [argv for _, argv in COMMANDS[:6]]
    assert ['python', 'tools/quickstart.py'] in first
    assert ['python', '-m', 'pytest', 'tests'] in first


@pytest.mark.parametrize(
    'argv', [argv for _, argv in TOOL_COMMANDS], ids=[' '.join(a[1:3]) for _, a in TOOL_COMMANDS]
)
def test_readme_command_parses_and_names_existing_files(argv):
    script = ROOT / argv[1]
    assert script.is_file(), f'{argv[1]} does not exist'
    module = _tool_module(script.name)
    args = argv[2:]
    parse = getattr(module, 'parse_args', None)
    if parse is not None:
        try:
            parse(args)
        except SystemExit as stop:
            pytest.fail(f'{" ".join(argv)}: the parser refused it (exit {stop.code})')
    for arg in args:
        if re.match(r'^(configs|checkpoints|demo|tests|tools)/', arg):
            assert (ROOT / arg).exists(), f'{arg} named in the README does not exist'
        elif '/' in arg and not arg.startswith('-') and '=' not in arg:
            assert arg.startswith(CREATED), f'{arg}: neither a repository file nor an output'


def test_every_detdeploy_command_is_a_subcommand():
    detdeploy = [argv for _, argv in COMMANDS if argv[0] == 'detdeploy']
    assert detdeploy, 'the README shows the command line'
    for argv in detdeploy:
        assert argv[1] == '--help' or as_tool_command(argv) != argv, ' '.join(argv)


def test_every_tool_the_readme_mentions_exists():
    for path in re.findall(r'`((?:tools|demo)/[\w/.]+\.(?:py|sh))', README):
        assert (ROOT / path).is_file(), path


def test_your_first_export_runs_as_written(tmp_path):
    """The newcomer's block, run for real: export + verify, evaluate both ways, draw."""
    for name in ('configs', 'checkpoints', 'demo'):
        (tmp_path / name).symlink_to(ROOT / name)
    block = [argv for section, argv in COMMANDS if section == 'Your first export']
    assert [Path(a[1]).name for a in block] == [
        'generate_synthetic_coco.py',
        'pytorch2onnx.py',
        'test.py',
        'test.py',
        'image_demo.py',
    ]
    outputs = []
    for argv in block:
        args = list(argv[2:])
        if argv[1].endswith('generate_synthetic_coco.py'):
            args += ['--num-train', '0']  # only the val split is read below
        outcome = call_tool(Path(argv[1]).name, *args, cwd=tmp_path)
        assert outcome.code == 0, outcome.stderr[-3000:]
        outputs.append(outcome.stdout + outcome.stderr)
    assert 'verification passed' in outputs[1]
    ap = [
        re.search(r'IoU=0.50:0.95 \| area=   all \| maxDets=100 \] = ([\d.]+)', o)
        for o in outputs[2:4]
    ]
    assert ap[0] and ap[1] and ap[0].group(1) == ap[1].group(1), 'ONNX Runtime AP == PyTorch AP'
    assert (tmp_path / 'work_dirs' / 'first' / 'demo.jpg').is_file()


if __name__ == '__main__':
    for section, argv in COMMANDS:
        print(f'[{section}]', ' '.join(argv))
    sys.exit(0)
