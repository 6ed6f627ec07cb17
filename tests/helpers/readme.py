"""The README's commands: every ``bash`` block read into ``(section heading, argv)`` rows."""

import re
import shlex

from conftest import ROOT

README = (ROOT / 'README.md').read_text()


def bash_commands(text: str) -> list[tuple[str, list[str]]]:
    """``(section heading, argv)`` of every command in the ``bash`` blocks, continuation lines
    joined, comments dropped."""
    commands, section = [], ''
    for block_start, block in _blocks(text):
        section = _heading_before(text, block_start)
        joined = block.replace('\\\n', ' ')
        for line in joined.splitlines():
            line = line.split(' #', 1)[0].strip()
            if not line or line.startswith('#'):
                continue
            for part in line.split('&&'):
                # a trailing & (a server started in the background) is not an argument
                commands.append((section, shlex.split(part.strip().removesuffix(' &'))))
    return commands


def _blocks(text: str):
    for match in re.finditer(r'```bash\n(.*?)```', text, re.S):
        yield match.start(), match.group(1)


def _heading_before(text: str, position: int) -> str:
    headings = re.findall(r'^## (.+)$', text[:position], re.M)
    return headings[-1] if headings else ''


def as_tool_command(argv: list[str]) -> list[str]:
    """``detdeploy COMMAND ARGS`` as the tool it runs: ``python tools/... ARGS``."""
    from deploy.commands import COMMANDS as SUBCOMMANDS

    if argv[0] == 'detdeploy' and len(argv) > 1 and argv[1] in SUBCOMMANDS:
        return ['python', SUBCOMMANDS[argv[1]].script, *argv[2:]]
    return argv


COMMANDS = bash_commands(README)
