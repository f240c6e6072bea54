"""Optional backends: kernel layout converters, backend selection, and parity with the pure backend.

Parity tests run only where spconv / MinkowskiEngine are installed; the converters are checked
against an explicit element-by-element description of each library's layout either way.
"""
from __future__ import annotations

import importlib.util
import itertools
import sys

import numpy as np
import pytest
import torch

from clip2scene_core.model import TINY_MODEL_CONFIG, build_model, load_weights, restore_model
from clip2scene_core.segmenter import Segmenter
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.sparse.backends import conv_backend
from clip2scene_core.sparse.backends.base import aligned_grid
from clip2scene_core.sparse.convert import (
    convert_kernel,
    convert_state_dict,
    kernel_from_canonical,
    kernel_keys,
    kernel_to_canonical,
)

HAS_SPCONV = importlib.util.find_spec("spconv") is not None
HAS_MINKOWSKI = importlib.util.find_spec("MinkowskiEngine") is not None
LIBRARY_BACKENDS = [
    pytest.param("spconv", marks=pytest.mark.skipif(not HAS_SPCONV, reason="spconv not installed")),
    pytest.param("minkowski", marks=pytest.mark.skipif(not HAS_MINKOWSKI, reason="MinkowskiEngine not installed")),
]


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as spconv needs on CPU (its backend would set it anyway); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def canonical_kernel(size: int, c_in: int = 2, c_out: int = 3) -> torch.Tensor:
    return torch.randn(size**3, c_in, c_out, generator=torch.Generator().manual_seed(size), dtype=torch.float64)


@pytest.mark.parametrize("size", [2, 3])
def test_minkowski_layout_puts_each_offset_at_its_x_fastest_index(size):
    canonical = canonical_kernel(size)
    engine = kernel_from_canonical(canonical, "minkowski")
    for ix, iy, iz in itertools.product(range(size), repeat=3):
        z_fastest = (ix * size + iy) * size + iz
        x_fastest = ix + size * (iy + size * iz)
        assert torch.equal(engine[x_fastest], canonical[z_fastest])


@pytest.mark.parametrize("size", [2, 3])
def test_spconv_layout_is_out_kx_ky_kz_in(size):
    canonical = canonical_kernel(size)
    library = kernel_from_canonical(canonical, "spconv")
    assert library.shape == (3, size, size, size, 2)
    for ix, iy, iz in itertools.product(range(size), repeat=3):
        for c_in, c_out in itertools.product(range(2), range(3)):
            assert library[c_out, ix, iy, iz, c_in] == canonical[(ix * size + iy) * size + iz, c_in, c_out]


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("source, target", list(itertools.permutations(["pure", "minkowski", "spconv"], 2)))
def test_kernel_conversion_round_trips(size, source, target):
    original = kernel_from_canonical(canonical_kernel(size), source)
    there = convert_kernel(original, source, target)
    assert torch.equal(convert_kernel(there, target, source), original)
    assert torch.equal(kernel_to_canonical(there, target), kernel_to_canonical(original, source))


def test_converters_reject_wrong_shapes_and_layouts():
    with pytest.raises(ValueError, match="not a cube"):
        kernel_to_canonical(torch.zeros(26, 2, 3), "minkowski")
    with pytest.raises(ValueError, match="spconv kernels"):
        kernel_to_canonical(torch.zeros(27, 2, 3), "spconv")
    with pytest.raises(ValueError, match="unknown kernel layout"):
        convert_kernel(torch.zeros(27, 2, 3), "pure", "torchsparse")


def test_state_dict_conversion_touches_only_sparse_kernels_and_round_trips():
    model = build_model(TINY_MODEL_CONFIG)
    keys = kernel_keys(model)
    # stem 2 + per level (down + block of 2) * 2 levels + per level (up + block of 2) * 2 levels
    assert len(keys) == 2 + 3 * 2 + 3 * 2
    state = model.state_dict()
    converted = convert_state_dict(state, keys, "pure", "spconv")
    for key, value in state.items():
        if key in keys:
            assert converted[key].ndim == 5
        else:
            assert converted[key] is value
    back = convert_state_dict(converted, keys, "spconv", "pure")
    assert all(torch.equal(back[key], state[key]) for key in state)
    with pytest.raises(KeyError, match="no sparse kernel"):
        convert_state_dict(state, ["nope.weight"], "pure", "spconv")


def test_aligned_grid_shifts_by_multiples_of_the_coarsest_stride():
    coords = torch.tensor([[0, -5, 3, 17], [1, 9, -16, 0]], dtype=torch.int32)
    shifted, shift, shape = aligned_grid(coords, 16)
    assert shift == [-16, -16, 0]
    assert shifted.tolist() == [[0, 11, 19, 17], [1, 25, 0, 0]]
    assert shape == [32, 32, 32]
    assert shifted.dtype == torch.int32


@pytest.mark.parametrize("backend, package", [("minkowski", "MinkowskiEngine"), ("spconv", "spconv")])
def test_unknown_or_missing_backends_fail_clearly(backend, package, monkeypatch):
    with pytest.raises(ValueError, match="unknown sparse backend"):
        conv_backend("torchsparse")
    # As if the library were not installed (None in sys.modules makes its import fail).
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(sys.modules, f"clip2scene_core.sparse.backends.{backend}", raising=False)
    with pytest.raises(ImportError, match=f"sparse backend '{backend}' needs the {package} package"):
        conv_backend(backend)


def _batch(generator: torch.Generator, channels: int) -> SparseTensor:
    frames = []
    for b in range(2):
        xyz = torch.unique(torch.randint(-12, 12, (400, 3), generator=generator), dim=0)
        frames.append(torch.cat([torch.full((len(xyz), 1), b), xyz], dim=1))
    coords = torch.cat(frames).int()
    return SparseTensor(torch.randn(len(coords), channels, generator=generator, dtype=torch.float64), coords)


@pytest.mark.parametrize("backend", LIBRARY_BACKENDS)
def test_each_library_layer_matches_the_pure_layer(backend):
    g = torch.Generator().manual_seed(7)
    pure, library = conv_backend("pure"), conv_backend(backend, max_stride=4)
    for make in ("submanifold_conv", "down_conv"):
        reference = getattr(pure, make)(3, 4).double()
        layer = getattr(library, make)(3, 4).double()
        layer.weight.data = convert_kernel(reference.weight.data, "pure", backend)
        x = _batch(g, 3)
        got, want = layer(x), reference(SparseTensor(x.feats, x.coords))
        # Same voxel set (the library may order coarse voxels differently).
        assert sorted(map(tuple, got.coords.tolist())) == sorted(map(tuple, want.coords.tolist()))
        order = {tuple(c): i for i, c in enumerate(want.coords.tolist())}
        rows = torch.tensor([order[tuple(c)] for c in got.coords.tolist()])
        torch.testing.assert_close(got.feats, want.feats[rows], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", LIBRARY_BACKENDS)
def test_library_model_matches_the_pure_model_with_converted_weights(backend):
    g = torch.Generator().manual_seed(8)
    torch.manual_seed(8)
    pure = build_model(TINY_MODEL_CONFIG).double().train()
    library = build_model({**TINY_MODEL_CONFIG, "backend": backend}).double().train()
    load_weights(library, pure.state_dict(), "pure")
    x = _batch(g, 1)
    feats = x.feats.clone().requires_grad_(True)
    pure_out = pure(SparseTensor(feats, x.coords))["semantic"]
    lib_feats = x.feats.clone().requires_grad_(True)
    lib_out = library(SparseTensor(lib_feats, x.coords))["semantic"]
    torch.testing.assert_close(lib_out, pure_out, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(pure_out.shape, generator=g, dtype=torch.float64)
    (pure_out * upstream).sum().backward()
    (lib_out * upstream).sum().backward()
    torch.testing.assert_close(lib_feats.grad, feats.grad, rtol=1e-10, atol=1e-10)
    for key in kernel_keys(pure):
        module = key[: -len(".weight")]
        pure_grad = pure.get_submodule(module).weight.grad
        lib_grad = library.get_submodule(module).weight.grad
        torch.testing.assert_close(kernel_to_canonical(lib_grad, backend), pure_grad, rtol=1e-10, atol=1e-10)

    # ... and back: the library model's weights run in a pure model.
    again = build_model(TINY_MODEL_CONFIG).double().train()
    load_weights(again, library.state_dict(), backend)
    torch.testing.assert_close(again(SparseTensor(x.feats, x.coords))["semantic"], pure_out.detach(),
                               rtol=1e-10, atol=1e-10)


def test_restore_model_runs_a_checkpoint_with_its_own_backend_by_default():
    torch.manual_seed(9)
    trained = build_model(TINY_MODEL_CONFIG).double().eval()
    restored = restore_model(trained.config, trained.state_dict()).double().eval()
    assert restored.config == trained.config
    x = _batch(torch.Generator().manual_seed(9), 1)
    torch.testing.assert_close(restored(x)["semantic"], trained(SparseTensor(x.feats, x.coords))["semantic"])
    with pytest.raises(ValueError, match="'backend' must be one of"):
        restore_model(trained.config, trained.state_dict(), "torchsparse")


@pytest.mark.parametrize("backend", LIBRARY_BACKENDS)
def test_a_checkpoint_runs_with_another_backend_both_ways(backend, tiny_checkpoint):
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(10)).numpy() * 20 - 10
    intensity = np.full(len(points), 0.5, np.float32)
    pure = Segmenter(tiny_checkpoint, device="cpu")
    library = Segmenter(tiny_checkpoint, device="cpu", backend=backend)
    assert library.model.config["backend"] == backend
    want = pure.segment(points, intensity, return_embeddings=True)
    got = library.segment(points, intensity, return_embeddings=True)
    np.testing.assert_allclose(got.embeddings, want.embeddings, atol=1e-5)
    # ... and a checkpoint written by the library backend runs with the pure one.
    back = restore_model(library.model.config, library.model.state_dict(), "pure")
    for key, value in back.state_dict().items():
        torch.testing.assert_close(value, pure.model.state_dict()[key])
