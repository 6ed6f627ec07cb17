"""Checkpoint reading/writing: MMDetection layouts, safe unpickling, key reports, versions."""

import importlib
import os
import pickle
import re
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from deploy.errors import CheckpointError
from deploy.models.checkpoint import (
    load_checkpoint,
    load_checkpoint_file,
    save_checkpoint,
    strip_prefix,
)


class Versioned(nn.Module):
    """A layer with a ``_version`` that records the version ``load_state_dict`` hands it."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen_versions = []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self.seen_versions.append(local_metadata.get('version'))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class TinyDetector(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = Versioned()
        self.cls = nn.Linear(4, num_classes)


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: keys and _metadata get a ``module.`` prefix."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _randomised(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- round trips and layouts


def test_round_trip(tmp_path):
    model = _randomised(TinyDetector())
    path = tmp_path / 'ckpt.pth'
    save_checkpoint(model, path, meta=dict(CLASSES=['a', 'b', 'c'], epoch=12))
    assert not os.path.exists(str(path) + '.tmp')

    raw = torch.load(path, map_location='cpu', weights_only=True)  # MMDetection's layout
    assert set(raw) == {'meta', 'state_dict'}
    assert raw['meta']['CLASSES'] == ('a', 'b', 'c')

    loaded = load_checkpoint_file(path)
    assert isinstance(loaded['state_dict'], OrderedDict)
    assert loaded['class_names'] == ('a', 'b', 'c')
    assert loaded['meta']['epoch'] == 12

    fresh = TinyDetector()
    report = load_checkpoint(fresh, path, strict=True, logger=None)
    _assert_same_weights(model, fresh)
    assert report['missing'] == report['unexpected'] == report['mismatched'] == []
    assert report['class_names'] == ('a', 'b', 'c')


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    save_checkpoint(TinyDetector(), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(TinyDetector(), path)
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + '.tmp')


def test_module_prefix_is_stripped(tmp_path):
    model = _randomised(TinyDetector())
    path = tmp_path / 'ddp.pth'
    torch.save({'meta': {}, 'state_dict': Wrapper(model).state_dict()}, path)

    loaded = load_checkpoint_file(path)
    assert all(not k.startswith('module.') for k in loaded['state_dict'])
    fresh = TinyDetector()
    report = load_checkpoint(fresh, path, strict=True, logger=None)
    assert report['missing'] == []
    _assert_same_weights(model, fresh)


def test_metadata_versions_survive_prefix_stripping(tmp_path):
    state = Wrapper(TinyDetector()).state_dict()
    assert state._metadata['module.head'] == {'version': 2}
    path = tmp_path / 'ddp.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)

    loaded = load_checkpoint_file(path)
    metadata = loaded['state_dict']._metadata
    assert metadata['head'] == {'version': 2}
    assert not any(k == 'module' or k.startswith('module.') for k in metadata)

    fresh = TinyDetector()
    load_checkpoint(fresh, loaded, logger=None)
    assert fresh.head.seen_versions == [2]


def test_strip_prefix_leaves_other_keys():
    state = OrderedDict([('module.a', torch.zeros(1)), ('b', torch.ones(1))])
    state._metadata = OrderedDict([('', {'version': 1}), ('module', {}), ('module.a', {'v': 3})])
    out = strip_prefix(state)
    assert list(out) == ['a', 'b']
    assert out._metadata == {'': {}, 'a': {'v': 3}}


def test_classes_from_dataset_meta(tmp_path):
    path = tmp_path / 'v3.pth'
    meta = {'dataset_meta': {'classes': ('x', 'y')}, 'epoch': 1}
    torch.save({'meta': meta, 'state_dict': TinyDetector().state_dict()}, path)
    assert load_checkpoint_file(path)['class_names'] == ('x', 'y')


def test_raw_state_dict_file(tmp_path):
    model = _randomised(TinyDetector())
    path = tmp_path / 'raw.pth'
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint_file(path)
    assert loaded['meta'] == {} and loaded['class_names'] is None
    fresh = TinyDetector()
    load_checkpoint(fresh, path, strict=True, logger=None)
    _assert_same_weights(model, fresh)


# ---------------------------------------------------------------- safe unpickling


class _FakeHistoryBuffer:
    """Pickles like mmengine's HistoryBuffer: numpy arrays and bound methods in its state."""

    def __init__(self):
        self._log_history = np.array([1.0, 2.0, 3.0])
        self._count_history = np.array([1, 1, 1])
        self.max_length = 1000000
        self._statistics_methods = {'min': self.min}  # pickled as getattr(buffer, 'min')

    def min(self):
        return self._log_history.min()


class _FakeConfigDict(dict):
    """Pickles like mmengine's ConfigDict: ``ConfigDict({...})``."""

    def __reduce__(self):
        return (type(self), (dict(self),))


_FAKES = {
    ('mmengine.logging.history_buffer', 'HistoryBuffer'): _FakeHistoryBuffer,
    ('mmengine.config.config', 'ConfigDict'): _FakeConfigDict,
}


def _save_with_fake_mmengine(obj, path):
    """Pickle fake classes under mmengine's names, with fake modules only while saving."""
    saved = {}
    try:
        for (module_name, class_name), cls in _FAKES.items():
            # import the real parent package first, so it never binds names from a fake module
            importlib.import_module(module_name.rsplit('.', 1)[0])
            fake = types.ModuleType(module_name)
            setattr(fake, class_name, cls)
            saved[cls] = (cls.__module__, cls.__qualname__)
            cls.__module__, cls.__qualname__ = module_name, class_name
            saved[module_name] = sys.modules.get(module_name)
            sys.modules[module_name] = fake
        torch.save(obj, path)
    finally:
        for key, value in saved.items():
            if isinstance(key, str):
                if value is None:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = value
            else:
                key.__module__, key.__qualname__ = value


def test_numpy_and_mmengine_objects_in_meta(tmp_path):
    model = _randomised(TinyDetector())
    path = tmp_path / 'train.pth'
    meta = {
        'epoch': np.int64(12),
        'lr': np.float64(0.01),
        'hist': np.arange(4, dtype=np.float32),
        'message_hub': {'log_scalars': {'loss': _FakeHistoryBuffer()}},
        'dataset_meta': _FakeConfigDict(classes=('a', 'b', 'c')),
    }
    _save_with_fake_mmengine({'meta': meta, 'state_dict': model.state_dict()}, path)
    with pytest.raises(pickle.UnpicklingError):  # the fast path really refuses this file
        torch.load(path, map_location='cpu', weights_only=True)

    loaded = load_checkpoint_file(path)
    assert loaded['class_names'] == ('a', 'b', 'c')
    assert loaded['meta']['epoch'] == 12 and loaded['meta']['lr'] == 0.01
    np.testing.assert_array_equal(loaded['meta']['hist'], np.arange(4, dtype=np.float32))
    buffer = loaded['meta']['message_hub']['log_scalars']['loss']
    assert type(buffer).__name__ == 'HistoryBuffer'
    assert not isinstance(buffer, _FakeHistoryBuffer)  # an inert placeholder, not the class
    assert type(loaded['meta']['dataset_meta']).__name__ == 'ConfigDict'
    np.testing.assert_array_equal(buffer.state['_log_history'], [1.0, 2.0, 3.0])
    assert type(buffer.state['_statistics_methods']['min']).__name__ == 'min'  # inert, too

    fresh = TinyDetector()
    load_checkpoint(fresh, path, strict=True, logger=None)
    _assert_same_weights(model, fresh)


class _RunsCommand:
    def __reduce__(self):
        return (os.system, ('echo refused-global-test-should-not-run',))


def test_os_system_is_refused(tmp_path, capfd):
    path = tmp_path / 'evil.pth'
    torch.save({'meta': {'x': _RunsCommand()}, 'state_dict': TinyDetector().state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert re.search(r'`(posix|nt|os)\.system`', message) and str(path) in message
    assert 'should-not-run' not in capfd.readouterr().out


def test_builtins_eval_is_refused(tmp_path):
    class CallsEval:
        def __reduce__(self):
            return (eval, ('1 + 1',))

    path = tmp_path / 'evil_eval.pth'
    torch.save({'state_dict': {}, 'meta': {'x': CallsEval()}}, path)
    with pytest.raises(CheckpointError, match=re.escape('`builtins.eval`')):
        load_checkpoint_file(path)


def test_getattr_is_refused_on_real_objects(tmp_path):
    class ReachesForGlobals:
        def __reduce__(self):
            return (getattr, (OrderedDict, 'fromkeys'))

    path = tmp_path / 'evil_getattr.pth'
    torch.save({'state_dict': {}, 'meta': {'x': ReachesForGlobals()}}, path)
    with pytest.raises(CheckpointError, match=re.escape('builtins.getattr(OrderedDict')):
        load_checkpoint_file(path)


# ---------------------------------------------------------------- reports and strictness


def _checkpoint_with_problems():
    state = TinyDetector(num_classes=5).state_dict()  # cls.* has 5 outputs: shape mismatch
    del state['backbone.1.running_mean']  # missing
    state['extra.weight'] = torch.zeros(2)  # unexpected
    return {'meta': {'CLASSES': ('a',)}, 'state_dict': state}


def test_report_names_missing_unexpected_mismatched():
    model = TinyDetector(num_classes=3)
    before = model.cls.weight.clone()
    messages = []
    report = load_checkpoint(model, _checkpoint_with_problems(), logger=messages.append)

    assert report['missing'] == ['backbone.1.running_mean']
    assert report['unexpected'] == ['extra.weight']
    assert sorted(report['mismatched']) == [
        ('cls.bias', (5,), (3,)),
        ('cls.weight', (5, 4), (3, 4)),
    ]
    assert torch.equal(model.cls.weight, before)  # mismatched keys are not loaded
    text = '\n'.join(messages)
    for name in ('backbone.1.running_mean', 'extra.weight', 'cls.weight', '[5, 4]', '[3, 4]'):
        assert name in text


def test_strict_raises_listing_keys():
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(TinyDetector(), _checkpoint_with_problems(), strict=True, logger=None)
    message = str(info.value)
    for name in ('backbone.1.running_mean', 'extra.weight', 'cls.weight'):
        assert name in message


def test_long_key_lists_are_truncated():
    state = {f'unused.{i}': torch.zeros(1) for i in range(30)}
    state.update(TinyDetector().state_dict())
    messages = []
    report = load_checkpoint(TinyDetector(), state, logger=messages.append)
    assert len(report['unexpected']) == 30
    assert '(+20 more)' in messages[0]


class UpgradingHead(nn.Module):
    """Renames the pre-version-2 ``cls.*`` keys to ``conv_cls.*``, like AnchorFreeHead does."""

    _version = 2

    def __init__(self, out_channels=4):
        super().__init__()
        self.conv_cls = nn.Conv2d(2, out_channels, 1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get('version') is None:
            for key in [k for k in state_dict if k.startswith(prefix + 'cls.')]:
                state_dict[prefix + 'conv_cls.' + key[len(prefix + 'cls.') :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class UpgradingModel(nn.Module):
    def __init__(self, out_channels=4):
        super().__init__()
        self.head = UpgradingHead(out_channels)


def _old_layout(out_channels):
    head = nn.Conv2d(2, out_channels, 1)
    # no _metadata: a checkpoint written before the head had a version
    return {'head.cls.weight': head.weight.detach(), 'head.cls.bias': head.bias.detach()}


def test_version_upgrade_renames_old_keys():
    old = _old_layout(4)
    model = UpgradingModel(4)
    report = load_checkpoint(model, old, strict=True, logger=None)
    assert report['missing'] == report['unexpected'] == report['mismatched'] == []
    assert torch.equal(model.head.conv_cls.weight, old['head.cls.weight'])

    # a current checkpoint carries the version, so its keys are left alone
    current = UpgradingModel(4).state_dict()
    assert current._metadata['head'] == {'version': 2}
    load_checkpoint(UpgradingModel(4), current, strict=True, logger=None)


def test_mismatch_found_only_after_upgrade_is_reported():
    model = UpgradingModel(4)
    before = model.head.conv_cls.weight.clone()
    report = load_checkpoint(model, _old_layout(6), logger=None)
    assert sorted(report['mismatched']) == [
        ('head.conv_cls.bias', (6,), (4,)),
        ('head.conv_cls.weight', (6, 2, 1, 1), (4, 2, 1, 1)),
    ]
    assert report['missing'] == [] and report['unexpected'] == []
    assert torch.equal(model.head.conv_cls.weight, before)
    with pytest.raises(CheckpointError, match='head.conv_cls.weight'):
        load_checkpoint(UpgradingModel(4), _old_layout(6), strict=True, logger=None)


def test_legacy_format_checkpoint(tmp_path):
    model = _randomised(TinyDetector())
    path = tmp_path / 'legacy.pth'
    meta = {'CLASSES': ['a', 'b', 'c'], 'epoch': np.int64(3)}  # numpy: restricted path
    checkpoint = {'meta': meta, 'state_dict': model.state_dict()}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint_file(path)
    assert loaded['class_names'] == ('a', 'b', 'c') and loaded['meta']['epoch'] == 3
    fresh = TinyDetector()
    load_checkpoint(fresh, loaded, strict=True, logger=None)
    _assert_same_weights(model, fresh)


# ---------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    path = tmp_path / 'missing.pth'
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        load_checkpoint_file(path)


def test_truncated_file(tmp_path):
    path = tmp_path / 'full.pth'
    save_checkpoint(TinyDetector(), path)
    data = path.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='not a PyTorch checkpoint') as info:
        load_checkpoint_file(truncated)
    assert str(truncated) in str(info.value)


def test_garbage_file(tmp_path):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(b'this is not a checkpoint at all')
    with pytest.raises(CheckpointError, match='not a PyTorch checkpoint'):
        load_checkpoint_file(path)


def test_no_state_dict_inside(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'meta': {}, 'optimizer': {'lr': 0.1}}, path)
    with pytest.raises(CheckpointError, match='has no `state_dict`'):
        load_checkpoint_file(path)
