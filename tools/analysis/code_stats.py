"""Structure figures of the code base, read from the source with ``ast`` (nothing is imported).

    python tools/analysis/code_stats.py            # the report as text
    python tools/analysis/code_stats.py --json     # the same figures as JSON

Reports: the longest functions of ``deploy/apis`` and of ``deploy`` as a whole, the functions
over 60 lines, the share of public functions whose parameters are all annotated (per package),
the ``.get(`` calls in ``deploy/training``, ``sys.path`` edits under ``tools/``, imports of
another module's private (``_name``) helpers, and the import cycles between modules of
``deploy`` (strongly connected components of the module import graph).
"""

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONG = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob('*.py'))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def functions(tree: ast.Module):
    """Yield (qualified name, node) for every function and method, nested ones included."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f'{prefix}{child.name}'
                yield name, child
                yield from walk(child, name + '.')
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f'{prefix}{child.name}.')

    yield from walk(tree, '')


def length(node) -> int:
    return node.end_lineno - node.lineno + 1


def fully_annotated(node) -> bool:
    args = node.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    params = [a for a in params if a.arg not in ('self', 'cls')]
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return all(a.annotation is not None for a in params + extra)


def is_public(qualname: str) -> bool:
    return not any(part.startswith('_') for part in qualname.split('.'))


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ''
    base = module.split('.')
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def imports(path: Path, tree: ast.Module, known: set[str]):
    """Yield (imported module, imported names) for the ``deploy`` modules ``path`` imports."""
    module = module_name(path)
    package = path.name == '__init__.py'
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, package, node)
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                if sub in known:  # ``from deploy.ops import nms`` imports the module itself
                    yield sub, []
                elif target in known:
                    yield target, [alias.name]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def sys_path_edits(folder: str) -> list[str]:
    hits = []
    for path in python_files(folder):
        for node in ast.walk(parse(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == 'path'
                and isinstance(node.func.value.value, ast.Name)
                and node.func.value.value.id == 'sys'
            ):
                hits.append(f'{path.relative_to(ROOT)}:{node.lineno}')
    return hits


def get_calls(folder: str) -> tuple[int, int]:
    """``.get(`` calls under ``folder``: all of them, and those with a default (``.get(k, d)``)."""
    every = with_default = 0
    for path in python_files(folder):
        for node in ast.walk(parse(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'get'
            ):
                every += 1
                with_default += len(node.args) == 2
    return every, with_default


def collect() -> dict:
    files = python_files('deploy')
    trees = {path: parse(path) for path in files}
    known = {module_name(path) for path in files}
    graph: dict[str, set[str]] = defaultdict(set)
    private_imports = []
    funcs = []
    typed = defaultdict(lambda: [0, 0])
    for path, tree in trees.items():
        module = module_name(path)
        graph[module]
        for target, names in imports(path, tree, known):
            if target != module and not module.startswith(target + '.'):
                graph[module].add(target)  # a package's own __init__ is not a cycle edge
            for name in names:
                if name.startswith('_') and not name.startswith('__') and target != module:
                    private_imports.append(f'{module} <- {target}.{name}')
        package = '.'.join(module.split('.')[:2])
        for qualname, node in functions(tree):
            funcs.append((length(node), f'{path.relative_to(ROOT)}:{qualname}'))
            if is_public(qualname):
                typed[package][1] += 1
                typed[package][0] += fully_annotated(node)
    funcs.sort(reverse=True)
    apis = [f for f in funcs if f[1].startswith('deploy/apis/')]
    return {
        'longest_in_apis': apis[:10],
        'longest_in_deploy': funcs[:10],
        'over_60_in_apis': sum(n > LONG for n, _ in apis),
        'over_60_in_deploy': sum(n > LONG for n, _ in funcs),
        'typed_public_functions': {
            pkg: f'{done}/{total} ({100 * done / max(total, 1):.0f}%)'
            for pkg, (done, total) in sorted(typed.items())
        },
        'training_get_calls': get_calls('deploy/training'),
        'tools_sys_path_edits': sys_path_edits('tools'),
        'private_imports': sorted(private_imports),
        'import_cycles': cycles(graph),
        'layer_cycles': cycles(layer_graph(graph)),
    }


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen one level down (``deploy.apis``, ``deploy.spec``, ...): a cycle here
    is an import that runs back up between packages even where no two modules form a cycle.
    ``deploy/__init__.py`` only hands names on and is left out."""
    layers: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        if module == 'deploy':
            continue
        unit = '.'.join(module.split('.')[:2])
        layers[unit].update(t for t in ('.'.join(t.split('.')[:2]) for t in targets) if t != unit)
    return layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print the figures as JSON')
    args = parser.parse_args(argv)
    stats = collect()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for key in ('longest_in_apis', 'longest_in_deploy'):
        print(f'{key}:')
        for lines, name in stats[key]:
            print(f'  {lines:4d}  {name}')
    print(
        f'functions over {LONG} lines: deploy/apis {stats["over_60_in_apis"]}, '
        f'deploy {stats["over_60_in_deploy"]}'
    )
    print('public functions with all parameters annotated:')
    for pkg, share in stats['typed_public_functions'].items():
        print(f'  {pkg}: {share}')
    every, with_default = stats['training_get_calls']
    print(f'.get( calls in deploy/training: {every} ({with_default} with a default)')
    print(f'sys.path edits in tools/: {len(stats["tools_sys_path_edits"])}')
    print(f'imports of private helpers across modules: {len(stats["private_imports"])}')
    for line in stats['private_imports']:
        print(f'  {line}')
    print(f'import cycles between deploy modules: {len(stats["import_cycles"])}')
    for cycle in stats['import_cycles']:
        print('  ' + ' <-> '.join(cycle))
    print(f'import cycles between deploy packages: {len(stats["layer_cycles"])}')
    for cycle in stats['layer_cycles']:
        print('  ' + ' <-> '.join(cycle))
    return 0


if __name__ == '__main__':
    sys.exit(main())
