"""The demo on what people have: a folder of images and a video through one loaded model, and
the OpenVINO IR kept as files to ship (``tools/onnx2openvino.py``) that the backend loads."""

import cv2
import numpy as np
import pytest
from conftest import call_tool
from helpers.bundled_exports import CONFIGS, IMAGE, fp32_export

from deploy.apis.media import draw_video

RETINA = CONFIGS['retinanet']


def _frames(count: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """Crops of the demo image sliding to the right: a small moving scene."""
    image = cv2.imread(IMAGE)
    step = max((image.shape[1] - 2 * width) // count, 1)
    crops = [image[:, i * step : i * step + 2 * width] for i in range(count)]
    return [cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA) for c in crops]


def _write_video(path, frames, fps=10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def _read_video(path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    capture.release()
    return frames, fps


@pytest.fixture(scope='module')
def ir_file(tmp_path_factory):
    pytest.importorskip('openvino')
    out = tmp_path_factory.mktemp('ir') / 'shipped' / 'retinanet.xml'
    outcome = call_tool(
        'onnx2openvino.py',
        RETINA,
        fp32_export('retinanet'),
        '--output-file',
        out,
        cwd=out.parent.parent,
    )
    assert outcome.code == 0, outcome.stderr
    assert 'the same detections' in outcome.stdout
    return out


def test_ir_is_two_files_the_backend_loads_directly(ir_file, tmp_path):
    from deploy.backends.openvino import OpenVINOBackend, save_ir

    assert sorted(p.name for p in ir_file.parent.iterdir()) == ['retinanet.bin', 'retinanet.xml']
    # Moved alone, without the ONNX file or a cache folder, it still loads with its spec.
    shipped = tmp_path / 'model.xml'
    shipped.write_bytes(ir_file.read_bytes())
    shipped.with_suffix('.bin').write_bytes(ir_file.with_suffix('.bin').read_bytes())
    backend = OpenVINOBackend(shipped)
    assert backend.spec.class_names and set(backend.input_names) == {'input', 'img_shape'}
    assert not list(tmp_path.glob('*.openvino'))
    # A bad target and a file without a spec are one-line errors.
    with pytest.raises(Exception, match=r'\.xml file'):
        save_ir(fp32_export('retinanet'), tmp_path / 'model.bin')
    shipped.with_suffix('.bin').unlink()
    with pytest.raises(Exception, match=r'model\.bin not found'):
        OpenVINOBackend(shipped)


def test_demo_draws_a_folder_and_a_video(ir_file, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    frames = _frames(6)
    for i, frame in enumerate(frames[:3]):
        cv2.imwrite(str(folder / f'{i}.jpg'), frame)
    (folder / 'notes.txt').write_text('not an image')
    outcome = call_tool(
        'image_demo.py', folder, RETINA, ir_file, '--out-dir', tmp_path / 'drawn', cwd=tmp_path
    )
    assert outcome.code == 0, outcome.stderr
    assert sorted(p.name for p in (tmp_path / 'drawn').iterdir()) == ['0.jpg', '1.jpg', '2.jpg']
    drawn = cv2.imread(str(tmp_path / 'drawn' / '0.jpg'))
    assert drawn.shape == frames[0].shape and np.abs(drawn.astype(int) - frames[0]).max() > 100

    _write_video(tmp_path / 'clip.mp4', frames)
    out = tmp_path / 'out' / 'drawn.mp4'
    outcome = call_tool(
        'image_demo.py', tmp_path / 'clip.mp4', RETINA, ir_file, '--out-file', out, cwd=tmp_path
    )
    assert outcome.code == 0, outcome.stderr
    assert '6 frames (160x120, 10 fps)' in outcome.stdout
    written, fps = _read_video(out)
    assert len(written) == 6 and fps == pytest.approx(10.0)
    assert written[0].shape == frames[0].shape
    assert [p.name for p in out.parent.iterdir()] == ['drawn.mp4'], 'no temporary left'


def test_an_interrupted_video_leaves_nothing(tmp_path):
    _write_video(tmp_path / 'clip.mp4', _frames(5))
    seen = []

    def model(frame):
        seen.append(frame)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return None

    out = tmp_path / 'out'
    with pytest.raises(KeyboardInterrupt):
        draw_video(tmp_path / 'clip.mp4', out / 'drawn.mp4', model, lambda image, _r: image)
    assert len(seen) == 3 and not list(out.iterdir())


@pytest.mark.parametrize(
    ('args', 'needle'),
    [
        (('{empty}',), 'no images'),
        (('{clip}', '--out-file', '{tmp}/x.jpg'), 'a video is drawn into a video'),
        (('{folder}', '--out-file', '{tmp}/x.jpg'), 'a folder goes to --out-dir'),
    ],
)
def test_demo_input_errors_are_one_line(args, needle, tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'folder').mkdir()
    cv2.imwrite(str(tmp_path / 'folder' / 'a.png'), _frames(1)[0])
    _write_video(tmp_path / 'clip.mp4', _frames(2))
    paths = dict(
        empty=tmp_path / 'empty',
        clip=tmp_path / 'clip.mp4',
        folder=tmp_path / 'folder',
        tmp=tmp_path,
    )
    argv = [a.format(**paths) for a in args]
    outcome = call_tool('image_demo.py', argv[0], RETINA, 'missing.onnx', *argv[1:], cwd=tmp_path)
    assert outcome.code == 2 and needle in outcome.stderr and len(outcome.stderr.splitlines()) == 1
