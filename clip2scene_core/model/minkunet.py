"""MinkUNet: the sparse residual U-Net backbone (the SPVCNN-style MinkUNet CLIP2Scene uses).

With widths ``[w0, w1..wL, w(L+1)..w2L]`` (L levels; the paper's ``[32, 32, 64, 128, 256, 256,
128, 96, 96]`` has L = 4):

* stem: two 3x3x3 submanifold convs in_channels -> w0 (each + BatchNorm + ReLU), stride 1;
* encoder level i = 1..L: 2x2x2 stride-2 conv w(i-1) -> w(i-1) (+BN+ReLU), then
  ``blocks_per_stage`` residual blocks to w(i) at stride 2**i;
* decoder level j = 1..L: transposed 2x2x2 conv to w(L+j) (+BN+ReLU) back to stride 2**(L-j),
  concatenated with the encoder output of that stride, then ``blocks_per_stage`` residual blocks
  to w(L+j).

The output has the input's voxels, in the input's order, with w2L channels.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from clip2scene_core.sparse import SparseBatchNorm, SparseLinear, SparseReLU, SparseTensor, cat
from clip2scene_core.sparse.backends import ConvBackend


class ConvBnReLU(nn.Sequential):
    """A sparse convolution followed by BatchNorm and ReLU."""

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__(conv, SparseBatchNorm(channels), SparseReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3x3 submanifold convs with BatchNorm; identity (or linear+BN projection) shortcut; ReLU."""

    def __init__(self, in_channels: int, out_channels: int, backend: ConvBackend) -> None:
        super().__init__()
        self.conv1 = ConvBnReLU(backend.submanifold_conv(in_channels, out_channels), out_channels)
        self.conv2 = backend.submanifold_conv(out_channels, out_channels)
        self.norm2 = SparseBatchNorm(out_channels)
        self.shortcut = (
            nn.Identity() if in_channels == out_channels
            else nn.Sequential(SparseLinear(in_channels, out_channels, bias=False), SparseBatchNorm(out_channels))
        )
        self.relu = SparseReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.norm2(self.conv2(self.conv1(x)))
        return self.relu(out.with_feats(out.feats + self.shortcut(x).feats))


def _stage(in_channels: int, out_channels: int, blocks: int, backend: ConvBackend) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(in_channels if i == 0 else out_channels, out_channels, backend)
                           for i in range(blocks)])


class MinkUNet(nn.Module):
    """Sparse residual U-Net: SparseTensor (V, in_channels) at stride 1 -> (V, widths[-1]).

    widths: 2L + 1 channel widths (stem, L encoder levels, L decoder levels); blocks_per_stage:
    residual blocks per level; backend: the convolution backend building the sparse convolutions.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], blocks_per_stage: int,
                 backend: ConvBackend) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 3 or len(widths) % 2 == 0 or min(widths) < 1:
            raise ValueError(f"widths must be 2L + 1 >= 3 positive ints (stem, L down, L up), got {widths}")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        levels = len(widths) // 2
        self.levels = levels
        self.out_channels = widths[-1]
        self.stem = nn.Sequential(
            ConvBnReLU(backend.submanifold_conv(in_channels, widths[0]), widths[0]),
            ConvBnReLU(backend.submanifold_conv(widths[0], widths[0]), widths[0]),
        )
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for i in range(1, levels + 1):
            self.down.append(ConvBnReLU(backend.down_conv(widths[i - 1], widths[i - 1]), widths[i - 1]))
            self.encoder.append(_stage(widths[i - 1], widths[i], blocks_per_stage, backend))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for j in range(1, levels + 1):
            previous, width, skip = widths[levels + j - 1], widths[levels + j], widths[levels - j]
            self.up.append(ConvBnReLU(backend.up_conv(previous, width), width))
            self.decoder.append(_stage(width + skip, width, blocks_per_stage, backend))

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.stride != 1:
            raise ValueError(f"MinkUNet expects a stride-1 input, got stride {x.stride}")
        skips = [self.stem(x)]
        for down, stage in zip(self.down, self.encoder):
            skips.append(stage(down(skips[-1])))
        out = skips.pop()
        for up, stage in zip(self.up, self.decoder):
            out = stage(cat([up(out), skips.pop()]))
        return out
