"""Convolution backends behind one config switch: "pure" (default), "minkowski", "spconv".

A backend only makes the three sparse convolutions (`ConvBackend`); BatchNorm, ReLU, linear maps
and concatenation act on `SparseTensor` features and are the same for all. The optional libraries
are imported only when their backend is chosen.
"""
from __future__ import annotations

import importlib

from clip2scene_core.sparse.backends.base import ConvBackend

BACKENDS = ("pure", "minkowski", "spconv")
_MODULES = {
    "pure": "clip2scene_core.sparse.backends.pure",
    "minkowski": "clip2scene_core.sparse.backends.minkowski",
    "spconv": "clip2scene_core.sparse.backends.spconv",
}
_PACKAGES = {"minkowski": "MinkowskiEngine", "spconv": "spconv"}


def conv_backend(name: str, max_stride: int = 16) -> ConvBackend:
    """The convolution backend ``name``.

    max_stride: the coarsest stride the network reaches (2 ** levels); library backends align
    their non-negative grids to it so that every down-sampling sees the same cells as the pure one.
    Raises ValueError for an unknown name and ImportError naming the package for a missing library.
    """
    if name not in _MODULES:
        raise ValueError(f"unknown sparse backend {name!r}; choose one of {list(BACKENDS)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as error:
        raise ImportError(f"sparse backend {name!r} needs the {_PACKAGES[name]} package: {error}") from error
    return module.make_backend(max_stride)


__all__ = ["BACKENDS", "ConvBackend", "conv_backend"]
