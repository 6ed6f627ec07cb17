"""The three ways every detector runs: eager prediction, the deploy graph, and raw head outputs."""

from torch import Tensor, nn


class BaseDetector(nn.Module):
    """Detector interface used by backends, export and verification.

    * :meth:`predict` is the eager reference (MMDetection semantics): variable-length detections
      per image, in network-input coordinates (shared post-processing rescales them).
    * :meth:`forward_deploy` is what is exported: batched, fixed-size padded outputs named
      :attr:`output_names`, with the real image shapes as a second input.
    * :meth:`forward_raw` returns the raw head tensors (``--skip-postprocess``, verification).
    """

    #: names of the deploy outputs, in order
    output_names: tuple[str, ...] = ('dets', 'labels')
    #: class names, set from the checkpoint or config when known
    class_names: tuple[str, ...] | None = None

    @property
    def threshold_on_output_score(self) -> bool:
        """Whether the final ``score_thr`` is compared with the output scores (see
        :class:`deploy.spec.ModelSpec`); False unless the final head says so."""
        head = getattr(self, 'roi_head', None) or getattr(self, 'bbox_head', None)
        return bool(getattr(head, 'threshold_on_output_score', False))

    @property
    def with_neck(self) -> bool:
        return hasattr(self, 'neck')

    def extract_feat(self, img: Tensor) -> tuple[Tensor, ...]:
        """Backbone, then the neck when there is one (every detector has a ``backbone``)."""
        x = self.backbone(img)
        return self.neck(x) if self.with_neck else x

    def predict(self, img: Tensor, img_metas: list[dict]) -> list[dict]:
        """``img [B, 3, H, W]`` -> one ``dict(dets [n, 5], labels [n](, masks))`` per image."""
        raise NotImplementedError

    def forward_deploy(self, img: Tensor, img_shape: Tensor) -> tuple[Tensor, ...]:
        """``img [B, 3, H, W]``, ``img_shape [B, 2]`` float ``(h, w)`` -> :attr:`output_names`."""
        raise NotImplementedError

    def forward_raw(self, img: Tensor) -> dict[str, Tensor]:
        """Raw head outputs by name, e.g. ``cls_score_0`` (``--skip-postprocess``, verification)."""
        raise NotImplementedError
