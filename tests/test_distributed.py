"""Distributed evaluation pieces: sharding, gathering, and a real 2-process gloo group on CPU."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch.multiprocessing as mp
from conftest import ROOT

from deploy.apis.distributed import (
    BackendTime,
    cleanup_distributed,
    gather_backend_time,
    gather_results,
    init_distributed,
    shard_indices,
)
from deploy.apis.test import throughput_line
from deploy.errors import ConfigError
from deploy.tasks import TestRun as RunRecord

#: image ids of a 7-image "data set", deliberately not sorted
IMG_IDS = [42, 7, 19, 3, 88, 11, 56]


@pytest.mark.parametrize('num_items', [0, 1, 5, 7, 8])
@pytest.mark.parametrize('world_size', [1, 2, 3])
def test_shards_cover_every_item_exactly_once(num_items, world_size):
    shards = [shard_indices(num_items, r, world_size) for r in range(world_size)]
    flat = sorted(i for shard in shards for i in shard)
    assert flat == list(range(num_items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if world_size == 2 and num_items == 5:
        assert shards == [[0, 2, 4], [1, 3]]  # interleaved


def test_shard_and_launcher_errors():
    with pytest.raises(ValueError):
        shard_indices(5, 2, 2)
    with pytest.raises(ConfigError, match='unknown launcher'):
        init_distributed('slurm')
    assert init_distributed('none') == (0, 1)


def test_gather_without_process_group_dedups_and_sorts():
    results, ids = gather_results(['b', 'a', 'b-again', 'c'], [5, 2, 5, 9])
    assert ids == [2, 5, 9] and results == ['a', 'b', 'c']


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, pad: bool) -> None:
    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    got_rank, got_world = init_distributed('pytorch', device='cpu')
    assert (got_rank, got_world) == (rank, world_size)
    if pad:  # DistributedSampler style: pad to a multiple of the world size, then interleave
        total = -(-len(IMG_IDS) // world_size) * world_size
        padded = list(range(len(IMG_IDS))) + list(range(total - len(IMG_IDS)))
        indices = padded[rank::world_size]
    else:
        indices = shard_indices(len(IMG_IDS), rank, world_size)
    img_ids = [IMG_IDS[i] for i in indices]
    results = [dict(img_id=i, rank=rank) for i in img_ids]
    gathered = gather_results(results, img_ids)
    timing = gather_backend_time(len(img_ids), 1.0 + rank)  # rank 1 is the slower one
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(gathered=gathered, seen=img_ids, timing=timing.__dict__), f)
    cleanup_distributed()


@pytest.mark.parametrize('pad', [False, True])
def test_two_process_gloo_gather(tmp_path, pad):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), pad), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / 'rank0.json').read_text())
    rank1 = json.loads((tmp_path / 'rank1.json').read_text())
    assert rank1['gathered'] is None
    results, ids = rank0['gathered']
    assert ids == sorted(IMG_IDS)  # every image exactly once, ordered by id
    assert [r['img_id'] for r in results] == ids
    seen = rank0['seen'] + rank1['seen']
    assert len(seen) == len(IMG_IDS) + (1 if pad else 0)  # the padding was really there
    # The backend time counts the images of both ranks, over the slower rank's seconds.
    assert rank0['timing'] == dict(images=len(seen), seconds=3.0, slowest_seconds=2.0)


def test_throughputs_count_the_same_images():
    """2 ranks, 5 images each at 100 ms: the backends alone run 20 img/s, not one rank's 10."""
    timing = BackendTime(images=10, seconds=1.0, slowest_seconds=0.5)
    assert timing.latency_ms == pytest.approx(100.0)
    run = RunRecord(results=[{}] * 10, img_ids=list(range(10)), latency_ms=timing.latency_ms)
    run.backend_images_per_second = timing.images_per_second
    run.wall_seconds = 1.0
    line = throughput_line(run, 'load, infer, evaluate', world_size=2, label='openvino bf16')
    assert line == (
        '10 images (openvino bf16, 2 ranks): 10.0 img/s end to end (load, infer, evaluate), '
        '20.0 img/s backend inference alone (50%)'
    )
    # One process: the backend rate is 1000 / latency over the same images.
    single = RunRecord(results=[{}] * 4, img_ids=list(range(4)), latency_ms=50.0, wall_seconds=0.4)
    assert single.backend_throughput == 20.0 and single.pipeline_efficiency == 0.5


def test_torchrun_environment(tmp_path):
    """The real launcher: torchrun's environment variables reach init_distributed."""
    script = tmp_path / 'probe.py'
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            from deploy.apis.distributed import (
                cleanup_distributed, gather_results, init_distributed, shard_indices)
            rank, world = init_distributed('pytorch', device='cpu')
            ids = [[5, 3, 9][i] for i in shard_indices(3, rank, world)]
            out = gather_results([f'r{{i}}' for i in ids], ids)
            if out is not None:
                json.dump(dict(world=world, out=out), open({str(tmp_path / 'out.json')!r}, 'w'))
            cleanup_distributed()
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            f'--master_port={_free_port()}',
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / 'out.json').read_text())
    assert out == dict(world=2, out=[['r3', 'r5', 'r9'], [3, 5, 9]])


def test_dist_test_script_is_valid_bash():
    script = ROOT / 'tools' / 'dist_test.sh'
    assert os.access(script, os.X_OK)
    subprocess.run(['bash', '-n', str(script)], check=True)
    proc = subprocess.run(['bash', str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage' in proc.stderr


def test_run_label_names_the_precision():
    """A BF16 run says bf16 (the engine's precision, else the file's)."""
    from types import SimpleNamespace

    from deploy.apis.test import TestOptions, run_label

    plan = SimpleNamespace(spec=SimpleNamespace(precision='fp32'))
    options = TestOptions(backend='openvino')
    assert run_label(SimpleNamespace(precision='bf16'), plan, options) == 'openvino bf16'
    assert run_label(object(), plan, TestOptions(backend='onnxruntime')) == 'onnxruntime fp32'
