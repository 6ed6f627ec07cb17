"""MMDetection's ``ChannelMapper`` neck: one conv per input level to a common channel count."""

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import MODELS
from ..layers import ConvModule

_RELU = {'type': 'ReLU'}


@MODELS.register_module()
class ChannelMapper(nn.Module):
    """Map every input level to ``out_channels`` with a ``ConvModule`` (children ``convs.{i}``),
    plus stride-2 3x3 ``extra_convs.{j}`` when ``num_outs`` exceeds the input levels (the first
    on the last input, the next ones on the previous output).

    DETR uses it as a 1x1 projection of ResNet's C5 (``in_channels=[2048]``, ``kernel_size=1``,
    no norm, no activation), the 3.x home of 2.x's ``bbox_head.input_proj``.

    Args:
        in_channels: channels of each input level.
        out_channels: channels of every output.
        kernel_size: of the per-level convs (padding keeps the size).
        conv_cfg, norm_cfg, act_cfg, bias: of every ``ConvModule`` (MMCV's defaults: no norm,
            ReLU, bias only without norm).
        num_outs: outputs (default: one per input).

    Input: a tuple of ``[B, in_channels[i], H_i, W_i]``; output: a tuple of
    ``[B, out_channels, H_i, W_i]`` (extra levels halve the size each).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        kernel_size: int = 3,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = _RELU,
        bias: bool | str = 'auto',
        num_outs: int | None = None,
        init_cfg: dict | None = None,
    ):
        super().__init__()
        in_channels = list(in_channels)
        num_outs = len(in_channels) if num_outs is None else num_outs
        if num_outs < len(in_channels):
            raise ConfigError(
                f'ChannelMapper: num_outs={num_outs} is fewer than the {len(in_channels)} inputs'
            )
        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, bias=bias)
        self.convs = nn.ModuleList(
            ConvModule(c, out_channels, kernel_size, padding=(kernel_size - 1) // 2, **common)
            for c in in_channels
        )
        self.extra_convs = None
        if num_outs > len(in_channels):
            self.extra_convs = nn.ModuleList(
                ConvModule(
                    in_channels[-1] if j == 0 else out_channels,
                    out_channels,
                    3,
                    stride=2,
                    padding=1,
                    **common,
                )
                for j in range(num_outs - len(in_channels))
            )

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.convs):
            raise ValueError(f'ChannelMapper expects {len(self.convs)} inputs, got {len(inputs)}')
        outs = [conv(x) for conv, x in zip(self.convs, inputs)]
        for j, conv in enumerate(self.extra_convs or ()):
            outs.append(conv(inputs[-1] if j == 0 else outs[-1]))
        return tuple(outs)
