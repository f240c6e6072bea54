"""The pure-PyTorch backend: `SubmanifoldConv3d`, `DownConv3d`, `UpConv3d` (canonical layout)."""
from __future__ import annotations

from clip2scene_core.sparse.conv import DownConv3d, SubmanifoldConv3d, UpConv3d


class PureBackend:
    name = "pure"

    def submanifold_conv(self, in_channels: int, out_channels: int) -> SubmanifoldConv3d:
        return SubmanifoldConv3d(in_channels, out_channels)

    def down_conv(self, in_channels: int, out_channels: int) -> DownConv3d:
        return DownConv3d(in_channels, out_channels)

    def up_conv(self, in_channels: int, out_channels: int) -> UpConv3d:
        return UpConv3d(in_channels, out_channels)


def make_backend(max_stride: int) -> PureBackend:
    """The pure backend (needs no grid alignment: ``max_stride`` is unused)."""
    return PureBackend()
