"""Voxelisation (coords, point -> voxel map, counts) and feature moves between points and voxels."""
from __future__ import annotations

import pytest
import torch

from clip2scene_core.voxel import devoxelize, pool_to_voxels, voxelize


def hand_case():
    points = torch.tensor(
        [
            [0.05, 0.05, 0.05],  # cell (0, 0, 0)
            [0.15, 0.00, 0.00],  # cell (1, 0, 0)
            [0.09, 0.01, 0.02],  # cell (0, 0, 0)
            [-0.05, 0.00, 0.31],  # cell (-1, 0, 3)
        ]
    )
    return points


def test_voxelize_hand_computed_coords_inverse_counts():
    voxels = voxelize(hand_case(), voxel_size=0.1)
    assert voxels.coords.dtype == torch.int32 and voxels.inverse.dtype == torch.int64
    assert voxels.coords.tolist() == [[0, -1, 0, 3], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert voxels.inverse.tolist() == [1, 2, 1, 0]
    assert voxels.counts.tolist() == [1, 2, 1]
    assert len(voxels) == 3


def test_voxelize_keeps_batch_elements_apart():
    points = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.01, 2.01, 3.01]])
    voxels = voxelize(points, 0.5, batch=torch.tensor([1, 0, 1]))
    assert voxels.coords.tolist() == [[0, 2, 4, 6], [1, 2, 4, 6]]
    assert voxels.inverse.tolist() == [1, 0, 1]


def test_voxelize_far_coordinates_and_empty_input():
    points = torch.tensor([[-5000.0, 12000.0, -30.0], [4999.99, -12000.0, 29.99]], dtype=torch.float64)
    voxels = voxelize(points, 0.05)
    assert voxels.coords[:, 1:].tolist() == [[-100000, 240000, -600], [99999, -240000, 599]]
    empty = voxelize(torch.zeros((0, 3)), 0.1)
    assert empty.coords.shape == (0, 4) and empty.inverse.shape == (0,)


def test_voxelize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        voxelize(torch.zeros(4, 2), 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(torch.zeros(4, 3), 0.0)
    with pytest.raises(ValueError, match="batch"):
        voxelize(torch.zeros(4, 3), 0.1, batch=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        voxelize(torch.tensor([[float("nan"), 0.0, 0.0]]), 0.1)


def test_pool_mean_sum_max_and_devoxelize_round_trip():
    voxels = voxelize(hand_case(), 0.1)
    feats = torch.tensor([[1.0, -1.0], [2.0, 0.0], [3.0, 5.0], [4.0, 4.0]])
    mean = pool_to_voxels(feats, voxels.inverse, len(voxels))
    assert mean.tolist() == [[4.0, 4.0], [2.0, 2.0], [2.0, 0.0]]
    assert pool_to_voxels(feats, voxels.inverse, len(voxels), "sum").tolist() == [[4, 4], [4, 4], [2, 0]]
    assert pool_to_voxels(feats, voxels.inverse, len(voxels), "max").tolist() == [[4, 4], [3, 5], [2, 0]]
    assert devoxelize(mean, voxels.inverse).tolist() == [[2, 2], [2, 0], [2, 2], [4, 4]]
    with pytest.raises(ValueError, match="reduce"):
        pool_to_voxels(feats, voxels.inverse, len(voxels), "median")


def test_pool_and_devoxelize_pass_gradients():
    voxels = voxelize(hand_case(), 0.1)
    feats = torch.ones(4, 3, requires_grad=True)
    pooled = pool_to_voxels(feats, voxels.inverse, len(voxels), "mean")
    devoxelize(pooled, voxels.inverse).sum().backward()
    # Each point's gradient: sum over the points of its voxel of 1 / count = 1.
    torch.testing.assert_close(feats.grad, torch.ones(4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_voxel_ops_run_on_cuda_and_match_cpu():
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0)) * 5
    cpu = voxelize(points, 0.3)
    gpu = voxelize(points.cuda(), 0.3)
    assert gpu.coords.is_cuda and gpu.inverse.is_cuda
    assert torch.equal(gpu.coords.cpu(), cpu.coords) and torch.equal(gpu.inverse.cpu(), cpu.inverse)
    feats = torch.rand(1000, 4)
    for reduce in ("mean", "sum", "max"):
        torch.testing.assert_close(
            pool_to_voxels(feats.cuda(), gpu.inverse, len(gpu), reduce).cpu(),
            pool_to_voxels(feats, cpu.inverse, len(cpu), reduce),
        )
