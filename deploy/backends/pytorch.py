"""PyTorch backend: the eager reference behind the same interface as the exported models."""

import numpy as np
import torch

from .base import Backend


def pad_detections(per_image: list[dict], num_rows: int) -> dict[str, np.ndarray]:
    """Variable-length eager detections -> the padded ``dets``/``labels`` layout of the graphs."""
    batch = len(per_image)
    dets = np.zeros((batch, num_rows, 5), np.float32)
    labels = np.full((batch, num_rows), -1, np.int64)
    for i, result in enumerate(per_image):
        n = min(len(result['labels']), num_rows)
        dets[i, :n] = result['dets'][:n].cpu().numpy()
        labels[i, :n] = result['labels'][:n].cpu().numpy()
    return dict(dets=dets, labels=labels)


class PyTorchBackend(Backend):
    """Runs a zoo detector's eager :meth:`predict` (``mode='eager'``, the reference) or its
    traceable deploy path (``mode='deploy'``, what the exporters see).

    Args:
        model: a zoo detector (eval mode).
        device: torch device string.
        mode: ``'eager'`` or ``'deploy'``.
    """

    name = 'pytorch'

    def __init__(self, model: torch.nn.Module, device: str = 'cpu', mode: str = 'eager'):
        if mode not in ('eager', 'deploy'):
            raise ValueError(f'mode must be eager or deploy, got {mode!r}')
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.mode = mode
        self.output_names = tuple(model.output_names)
        self.spec = getattr(model, 'spec', None)

    def _max_rows(self) -> int:
        return self.model.test_cfg.final.output_cap

    @torch.no_grad()
    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        img = torch.as_tensor(inputs['input'], device=self.device)
        if getattr(self.spec, 'task', None) == 'classification':  # the image alone -> scores
            if self.mode == 'deploy':
                (scores,) = self.model.forward_deploy(img)
            else:
                scores = self.model.predict(img)
            return {'scores': scores.cpu().numpy()}
        img_shape = torch.as_tensor(inputs['img_shape'], device=self.device)
        if self.mode == 'deploy':
            outputs = self.model.forward_deploy(img, img_shape)
            return {n: t.cpu().numpy() for n, t in zip(self.output_names, outputs)}
        metas = [dict(img_shape=tuple(int(v) for v in shape)) for shape in img_shape.tolist()]
        per_image = self.model.predict(img, metas)
        outputs = pad_detections(per_image, self._max_rows())
        for name in ('masks', 'mask_logits'):
            if name in self.output_names:
                outputs[name] = self.model.pad_masks(per_image, self._max_rows())
        return outputs
