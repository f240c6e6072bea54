"""Sparse ops of the pure backend agree with dense torch convolutions (values and gradients, fp64)."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from clip2scene_core.sparse import (
    DownConv3d,
    SparseBatchNorm,
    SparseLinear,
    SparseReLU,
    SparseTensor,
    SubmanifoldConv3d,
    UpConv3d,
    cat,
    global_pool,
)
from clip2scene_core.sparse import kernel_map
from clip2scene_core.sparse import functional
from clip2scene_core.sparse.functional import group_pairs, sparse_convolution
from clip2scene_core.sparse.layout import kernel_offsets
from clip2scene_core.sparse.kernel_map import (
    build_downsample_map,
    build_submanifold_map,
    downsample_map,
    submanifold_map,
    upsample_map,
)

GRID = 6  # dense reference box side
OFFSET = torch.tensor([0, -4, 2, -6])  # even shift: coords go negative, the stride-2 grid is unchanged


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is fastest and does not stall when other processes share the cores
    (the test that needs two threads sets them itself)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_voxels(generator: torch.Generator, frames: int = 2, occupancy: float = 0.35,
                  channels: int = 3) -> tuple[SparseTensor, torch.Tensor]:
    """A random voxel set in a GRID^3 box per frame; returns (tensor, dense-box coords (V, 4))."""
    mask = torch.rand((frames, GRID, GRID, GRID), generator=generator) < occupancy
    box = mask.nonzero()
    feats = torch.randn((len(box), channels), generator=generator, dtype=torch.float64)
    return SparseTensor(feats, (box + OFFSET).int()), box


def to_dense(feats: torch.Tensor, box: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """(V, C) features at box coords -> (frames, C, size, size, size)."""
    dense = feats.new_zeros((frames, feats.shape[1], size, size, size))
    dense[box[:, 0], :, box[:, 1], box[:, 2], box[:, 3]] = feats
    return dense


def from_dense(dense: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    return dense[box[:, 0], :, box[:, 1], box[:, 2], box[:, 3]]


def canonical_to_conv3d(weight: torch.Tensor) -> torch.Tensor:
    """(K, C_in, C_out) canonical kernel -> conv3d's (C_out, C_in, k, k, k)."""
    k = round(weight.shape[0] ** (1 / 3))
    return weight.reshape(k, k, k, *weight.shape[1:]).permute(4, 3, 0, 1, 2)


def assert_same_gradients(sparse_out, dense_out, sparse_leaves, dense_leaves, generator):
    upstream = torch.randn(sparse_out.shape, generator=generator, dtype=torch.float64)
    sparse_grads = torch.autograd.grad((sparse_out * upstream).sum(), sparse_leaves)
    dense_grads = torch.autograd.grad((dense_out * upstream).sum(), dense_leaves)
    for got, want in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 2])
def test_submanifold_conv_matches_dense_conv3d_on_occupied_voxels(threads):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x, box = random_voxels(g)
    x.feats.requires_grad_(True)
    conv = SubmanifoldConv3d(3, 4).double()
    out = conv(x)
    assert out.coords is x.coords and out.stride == 1

    feats = x.feats.detach().clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    dense = F.conv3d(to_dense(feats, box, 2, GRID), canonical_to_conv3d(weight), padding=1)
    want = from_dense(dense, box)
    torch.testing.assert_close(out.feats, want, rtol=1e-12, atol=1e-12)
    assert_same_gradients(out.feats, want, (x.feats, conv.weight), (feats, weight), g)


def test_down_conv_matches_strided_conv3d():
    g = torch.Generator().manual_seed(1)
    x, box = random_voxels(g)
    x.feats.requires_grad_(True)
    conv = DownConv3d(3, 5).double()
    out = conv(x)
    assert out.stride == 2

    feats = x.feats.detach().clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    dense = F.conv3d(to_dense(feats, box, 2, GRID), canonical_to_conv3d(weight), stride=2)
    coarse_box = out.coords.long() - torch.cat([OFFSET[:1], OFFSET[1:] // 2])
    # Exactly the coarse cells holding at least one voxel, each once.
    assert sorted(map(tuple, coarse_box.tolist())) == sorted(set(map(tuple, (box // torch.tensor([1, 2, 2, 2])).tolist())))
    want = from_dense(dense, coarse_box)
    torch.testing.assert_close(out.feats, want, rtol=1e-12, atol=1e-12)
    assert_same_gradients(out.feats, want, (x.feats, conv.weight), (feats, weight), g)


def test_up_conv_matches_conv_transpose3d_on_the_finer_voxels():
    g = torch.Generator().manual_seed(2)
    x, box = random_voxels(g)
    coarse = DownConv3d(3, 5).double()(x)
    coarse = coarse.with_feats(coarse.feats.detach().requires_grad_(True))
    conv = UpConv3d(5, 2).double()
    out = conv(coarse)
    assert out.coords is x.coords and out.stride == 1

    coarse_box = coarse.coords.long() - torch.cat([OFFSET[:1], OFFSET[1:] // 2])
    feats = coarse.feats.detach().clone().requires_grad_(True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    # conv_transpose3d weight is (C_in, C_out, k, k, k)
    dense_weight = weight.reshape(2, 2, 2, 5, 2).permute(3, 4, 0, 1, 2)
    dense = F.conv_transpose3d(to_dense(feats, coarse_box, 2, GRID // 2), dense_weight, stride=2)
    want = from_dense(dense, box)
    torch.testing.assert_close(out.feats, want, rtol=1e-12, atol=1e-12)
    assert_same_gradients(out.feats, want, (coarse.feats, conv.weight), (feats, weight), g)


@pytest.mark.parametrize("layer", ["submanifold", "down", "up"])
def test_convolutions_pass_gradcheck(layer):
    g = torch.Generator().manual_seed(3)
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 2, 1, 1], [0, -1, 0, 1],
                           [1, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.int32)
    x = SparseTensor(torch.zeros((len(coords), 2), dtype=torch.float64), coords)
    if layer == "submanifold":
        kmap, kernel = submanifold_map(x), 27
    elif layer == "down":
        (kmap, _), kernel = downsample_map(x), 8
    else:
        (kmap, _), kernel = upsample_map(DownConv3d(2, 2).double()(x)), 8
    feats = torch.randn((kmap.num_in, 2), generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn((kernel, 2, 3), generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sparse_convolution, (feats, weight, kmap))


def test_pair_groups_of_any_size_give_the_same_convolution(monkeypatch):
    g = torch.Generator().manual_seed(6)
    x, _ = random_voxels(g, occupancy=0.5, channels=4)
    kmap = submanifold_map(x)
    weight = torch.randn((27, 4, 5), generator=g, dtype=torch.float64)

    def run() -> list[torch.Tensor]:
        feats, w = x.feats.clone().requires_grad_(), weight.clone().requires_grad_()
        out = sparse_convolution(feats, w, kmap)
        return [out, *torch.autograd.grad(out.square().sum(), (feats, w))]

    whole = run()
    assert len(kmap.groups(group_pairs(4, 5))) == 1
    monkeypatch.setattr(functional, "_GROUP_FLOATS", 5 * 64)  # 64 pairs per group
    assert group_pairs(4, 5) == 64
    assert len(kmap.groups(64)) > 10 and all(group.num_pairs <= 64 for group in kmap.groups(64)
                                             if len(group.spans) > 1)
    for got, want in zip(run(), whole):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert [group_pairs(1, c) for c in (1, 3, 4, 5, 1000)] == [256, 64, 64, 64, 1]


def test_sorted_search_and_dense_table_find_the_same_neighbours(monkeypatch):
    g = torch.Generator().manual_seed(4)
    x, _ = random_voxels(g, occupancy=0.5)
    table_map = build_submanifold_map(x.coords)
    table_down, table_coarse = build_downsample_map(x.coords)
    monkeypatch.setattr(kernel_map, "_DENSE_MIN_CELLS", 0)
    monkeypatch.setattr(kernel_map, "_DENSE_CELLS_PER_VOXEL", 0)
    assert kernel_map.CoordinateIndex(x.coords)._table is None
    sorted_map = build_submanifold_map(x.coords)
    assert len(table_map.pairs) == len(sorted_map.pairs) == 26
    for (k1, i1, o1), (k2, i2, o2) in zip(table_map.pairs, sorted_map.pairs):
        assert k1 == k2 and torch.equal(i1, i2) and torch.equal(o1, o2)
    sorted_down, sorted_coarse = build_downsample_map(x.coords)
    assert torch.equal(table_coarse, sorted_coarse)


def test_submanifold_map_lists_each_pair_once_per_direction():
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.int32)
    kmap = build_submanifold_map(coords)
    found = {(k, int(i), int(o)) for k, ins, outs in kmap.pairs for i, o in zip(ins, outs)}
    # (0,0,0) <-> (1,0,0) in frame 0: offset +x has z-fastest index 22, -x has 4.
    # (1,0,0) <-> (1,1,1) in frame 0: offset (0,1,1) has index 17, (0,-1,-1) has 9.
    # (0,0,0) <-> (1,1,1) in frame 0: offset (1,1,1) has index 26, (-1,-1,-1) has 0.
    # Frame 1's voxel has no neighbour although frame 0 has one at the same place.
    assert found == {(22, 1, 0), (4, 0, 1), (17, 2, 1), (9, 1, 2), (26, 2, 0), (0, 0, 2)}
    assert kmap.identity_offset == 13


def test_kernel_offsets_are_z_fastest_and_match_the_downsampling_offsets():
    assert kernel_offsets(3)[[0, 1, 3, 9, 13, 26]].tolist() == [
        [-1, -1, -1], [-1, -1, 0], [-1, 0, -1], [0, -1, -1], [0, 0, 0], [1, 1, 1]]
    g = torch.Generator().manual_seed(9)
    x, _ = random_voxels(g)
    kmap, coarse = build_downsample_map(x.coords)
    for k, fine, out in kmap.pairs:
        offset = x.coords[fine, 1:].long() - 2 * coarse[out, 1:].long()
        assert (offset == kernel_offsets(2)[k]).all()


def test_empty_voxel_sets_give_empty_outputs():
    x = SparseTensor(torch.zeros((0, 2)), torch.zeros((0, 4), dtype=torch.int32))
    out = UpConv3d(3, 2)(DownConv3d(2, 3)(SubmanifoldConv3d(2, 2)(x)))
    assert out.feats.shape == (0, 2) and out.coords is x.coords


def test_kernel_maps_are_built_once_per_stride_and_family():
    g = torch.Generator().manual_seed(5)
    x, _ = random_voxels(g)
    y = SubmanifoldConv3d(3, 3).double()(x)
    assert submanifold_map(y) is submanifold_map(x)
    other = SparseTensor(x.feats, x.coords.clone())
    assert submanifold_map(other) is not submanifold_map(x)


def test_voxels_of_different_frames_do_not_mix():
    coords = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.int32)
    x = SparseTensor(torch.ones((2, 1), dtype=torch.float64), coords)
    conv = SubmanifoldConv3d(1, 1).double()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert conv(x).feats.flatten().tolist() == [1.0, 1.0]


def test_conv_under_autocast_computes_in_the_autocast_dtype_and_returns_input_dtype_gradients():
    g = torch.Generator().manual_seed(6)
    x, _ = random_voxels(g)
    feats = x.feats.float().requires_grad_(True)
    conv = SubmanifoldConv3d(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x.with_feats(feats))
    assert out.feats.dtype == torch.bfloat16
    out.feats.float().sum().backward()
    assert feats.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32


def test_reused_workspaces_give_the_same_results_in_any_order_of_modes_and_threads():
    """Scratch buffers are reused across calls: inference mode, training and other threads must not
    see each other's (an inference tensor cannot even be written outside inference mode)."""
    g = torch.Generator().manual_seed(12)
    x, _ = random_voxels(g, channels=3)
    conv = SubmanifoldConv3d(3, 5).double()
    with torch.no_grad():
        want = conv(x).feats
    with torch.inference_mode():
        torch.testing.assert_close(conv(x).feats, want)
    feats = x.feats.clone().requires_grad_(True)
    out = conv(x.with_feats(feats)).feats
    torch.testing.assert_close(out.detach(), want)
    out.sum().backward()  # the backward gathers into the same slots as the forward did
    expected = torch.autograd.grad(conv(x.with_feats(x.feats.clone().requires_grad_(True))).feats.sum(),
                                   conv.weight)[0]
    torch.testing.assert_close(conv.weight.grad, expected)
    results = []
    thread = threading.Thread(target=lambda: results.append(conv(x).feats.detach()))
    thread.start()
    thread.join()
    torch.testing.assert_close(results[0], want)


def test_pointwise_ops_act_on_features_and_keep_voxels():
    g = torch.Generator().manual_seed(7)
    x, _ = random_voxels(g)
    for layer, reference in [
        (SparseBatchNorm(3).double(), lambda f: F.batch_norm(f, None, None, training=True)),
        (SparseReLU(), F.relu),
    ]:
        out = layer(x)
        assert out.coords is x.coords
        torch.testing.assert_close(out.feats, reference(x.feats))
    linear = SparseLinear(3, 2).double()
    torch.testing.assert_close(linear(x).feats, x.feats @ linear.weight.T + linear.bias)


def test_global_pool_reduces_each_frame():
    feats = torch.tensor([[1.0, -2.0], [3.0, 4.0], [5.0, 6.0]])
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [2, 0, 0, 0]], dtype=torch.int32)
    x = SparseTensor(feats, coords)
    assert global_pool(x, "mean").tolist() == [[2.0, 1.0], [0.0, 0.0], [5.0, 6.0]]
    assert global_pool(x, "sum").tolist() == [[4.0, 2.0], [0.0, 0.0], [5.0, 6.0]]
    assert global_pool(x, "max").tolist() == [[3.0, 4.0], [0.0, 0.0], [5.0, 6.0]]
    with pytest.raises(ValueError, match="reduce"):
        global_pool(x, "median")


def test_cat_joins_channels_of_tensors_on_the_same_voxels_only():
    g = torch.Generator().manual_seed(8)
    x, _ = random_voxels(g)
    y = x.with_feats(x.feats[:, :1] * 2)
    joined = cat([x, y])
    assert joined.num_channels == 4 and joined.coords is x.coords
    torch.testing.assert_close(joined.feats[:, 3], x.feats[:, 0] * 2)
    shifted = SparseTensor(x.feats, x.coords + 1)
    with pytest.raises(ValueError, match="different coordinates"):
        cat([x, shifted])


def test_bad_inputs_raise_clear_errors():
    coords = torch.zeros((2, 4), dtype=torch.int32)
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(torch.zeros(2), coords)
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(torch.zeros((2, 1)), torch.zeros((2, 3), dtype=torch.int32))
    with pytest.raises(ValueError, match="3 feature rows but 2"):
        SparseTensor(torch.zeros((3, 1)), coords)
    x = SparseTensor(torch.zeros((1, 2)), torch.zeros((1, 4), dtype=torch.int32))
    with pytest.raises(ValueError, match="expects 3 channels"):
        SubmanifoldConv3d(3, 1)(x)
    with pytest.raises(ValueError, match="no stride-0 voxels"):
        UpConv3d(2, 1)(x)
    with pytest.raises(ValueError, match="different coordinates at stride 1"):
        SparseTensor(torch.zeros((1, 2)), torch.ones((1, 4), dtype=torch.int32), 1, x.cache)
