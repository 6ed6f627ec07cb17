"""Derive the compact state_dict key manifest the zoo tests compare against.

Usage: python tools/misc/derive_key_manifest.py SHARED_JSON OUT_JSON

SHARED_JSON maps ``mmdet-2.28.2`` / ``mmdet-3.3.0`` to
``{config_path: [[key, shape, "p"|"b"], ...]}``.
OUT_JSON maps each 2.28.2 config name (file name without directory and ``.py``) to
``[[key, shape], ...]``; a model whose 3.3.0 list differs is added again under
``<2.x config name>@3.x``. The 3.x configs are paired with the 2.x ones by position, which is
checked by their directory. One model per line keeps the file small and its diffs readable.
"""

import argparse
import json
import os
import sys

V2, V3 = 'mmdet-2.28.2', 'mmdet-3.3.0'


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def key_list(entries: list) -> list:
    return [[key, list(shape)] for key, shape, *_ in entries]


def derive(shared: dict) -> dict:
    """The manifest dict (see the module docstring)."""
    v2, v3 = shared[V2], shared[V3]
    if len(v2) != len(v3):
        raise ValueError(f'{V2} has {len(v2)} configs but {V3} has {len(v3)}')
    manifest = {}
    for path2, path3 in zip(v2, v3):
        if os.path.dirname(path2) != os.path.dirname(path3):
            raise ValueError(f'cannot pair {path2} with {path3}')
        keys2 = key_list(v2[path2])
        manifest[config_name(path2)] = keys2
        keys3 = key_list(v3[path3])
        if keys3 != keys2:
            manifest[f'{config_name(path2)}@3.x'] = keys3
    return manifest


def dump(manifest: dict) -> str:
    lines = [
        f'{json.dumps(name)}:{json.dumps(keys, separators=(",", ":"))}'
        for name, keys in manifest.items()
    ]
    return '{\n' + ',\n'.join(lines) + '\n}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('shared_json', help='mmdet_state_dicts.json')
    parser.add_argument('out_json', help='where to write the manifest')
    args = parser.parse_args(argv)
    with open(args.shared_json) as f:
        manifest = derive(json.load(f))
    with open(args.out_json, 'w') as f:
        f.write(dump(manifest))
    print(f'wrote {len(manifest)} models to {args.out_json}: {", ".join(manifest)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
