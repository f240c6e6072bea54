"""The 3D network: config handling, batched input, output shapes/order, heads and trainability."""
from __future__ import annotations

import io

import pytest
import torch

from clip2scene_core.model import (
    DEFAULT_MODEL_CONFIG,
    TINY_MODEL_CONFIG,
    MinkUNet,
    build_model,
    resolve_config,
)
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.sparse.backends import conv_backend


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run thousands of small ops: one thread is fastest, and it keeps these tests
    from stalling on OpenMP barriers when other processes share the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_frame(generator: torch.Generator, batch: int, num: int = 300, extent: int = 12) -> torch.Tensor:
    """(V, 4) int32 unique voxel coords of one frame with batch index ``batch`` (may be negative xyz)."""
    xyz = torch.unique(torch.randint(-extent, extent, (num, 3), generator=generator), dim=0)
    return torch.cat([torch.full((len(xyz), 1), batch), xyz], dim=1).int()


def test_default_config_is_the_papers_minkunet():
    assert DEFAULT_MODEL_CONFIG["widths"] == [32, 32, 64, 128, 256, 256, 128, 96, 96]
    assert DEFAULT_MODEL_CONFIG["blocks_per_stage"] == 2
    assert DEFAULT_MODEL_CONFIG["backend"] == "pure"
    model = build_model(DEFAULT_MODEL_CONFIG)
    assert model.backbone.levels == 4 and model.backbone.out_channels == 96
    assert len(model.backbone.encoder[0]) == 2  # residual blocks per stage
    g = torch.Generator().manual_seed(0)
    coords = random_frame(g, 0, num=200, extent=20)
    out = model(SparseTensor(torch.randn(len(coords), 1, generator=g), coords))
    assert out["semantic"].shape == (len(coords), 512) and out["features"].shape == (len(coords), 96)


def test_tiny_model_outputs_both_heads_and_features_for_a_batch_of_frames():
    g = torch.Generator().manual_seed(1)
    coords = torch.cat([random_frame(g, 0), random_frame(g, 1), random_frame(g, 2)])
    model = build_model(TINY_MODEL_CONFIG)
    out = model(SparseTensor(torch.randn(len(coords), 1, generator=g), coords))
    assert set(out) == {"semantic", "consistency", "features"}
    assert out["semantic"].shape == out["consistency"].shape == (len(coords), TINY_MODEL_CONFIG["text_dim"])
    assert out["features"].shape == (len(coords), TINY_MODEL_CONFIG["widths"][-1])
    assert not torch.allclose(out["semantic"], out["consistency"])  # two different heads
    heads = model.heads
    torch.testing.assert_close(out["semantic"], heads.semantic(out["features"]))
    torch.testing.assert_close(out["consistency"], heads.consistency(out["features"]))


def test_frames_of_a_batch_do_not_influence_each_other_in_eval_mode():
    g = torch.Generator().manual_seed(2)
    first, second = random_frame(g, 0), random_frame(g, 1)
    f1, f2 = torch.randn(len(first), 1, generator=g), torch.randn(len(second), 1, generator=g)
    model = build_model(TINY_MODEL_CONFIG).eval()
    with torch.no_grad():
        alone = model(SparseTensor(f1, first))["semantic"]
        together = model(SparseTensor(torch.cat([f1, f2]), torch.cat([first, second])))["semantic"]
    torch.testing.assert_close(together[: len(first)], alone, rtol=1e-5, atol=1e-5)


def test_output_rows_follow_the_input_voxel_order():
    g = torch.Generator().manual_seed(3)
    coords = torch.cat([random_frame(g, 0), random_frame(g, 1)])
    feats = torch.randn(len(coords), 1, generator=g)
    perm = torch.randperm(len(coords), generator=g)
    model = build_model(TINY_MODEL_CONFIG).eval()
    with torch.no_grad():
        ordered = model(SparseTensor(feats, coords))["semantic"]
        shuffled = model(SparseTensor(feats[perm], coords[perm]))["semantic"]
    torch.testing.assert_close(shuffled, ordered[perm], rtol=1e-5, atol=1e-5)


def test_minkunet_with_three_levels_returns_the_input_voxels():
    g = torch.Generator().manual_seed(4)
    coords = random_frame(g, 0)
    net = MinkUNet(2, [4, 6, 8, 10, 8, 6, 5], 1, conv_backend("pure"))
    x = SparseTensor(torch.randn(len(coords), 2, generator=g), coords)
    out = net(x)
    assert out.coords is x.coords and out.num_channels == 5 and out.stride == 1


def test_training_steps_reduce_a_regression_loss():
    g = torch.Generator().manual_seed(5)
    coords = torch.cat([random_frame(g, 0, num=150), random_frame(g, 1, num=150)])
    x = SparseTensor(torch.randn(len(coords), 1, generator=g), coords)
    target = torch.randn(len(coords), TINY_MODEL_CONFIG["text_dim"], generator=g)
    torch.manual_seed(5)
    model = build_model(TINY_MODEL_CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = (model(x)["semantic"] - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_config_is_plain_data_that_rebuilds_the_same_model_from_a_weights_only_checkpoint():
    model = build_model({"widths": [4, 4, 8, 8, 4], "text_dim": 16, "blocks_per_stage": 1}).eval()
    assert model.config == {**DEFAULT_MODEL_CONFIG, "widths": [4, 4, 8, 8, 4], "text_dim": 16,
                            "blocks_per_stage": 1}
    buffer = io.BytesIO()
    torch.save({"model_config": model.config, "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = build_model(saved["model_config"]).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    g = torch.Generator().manual_seed(6)
    coords = random_frame(g, 0)
    x = torch.randn(len(coords), 1, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(SparseTensor(x, coords))["semantic"],
                                   model(SparseTensor(x, coords))["semantic"])


@pytest.mark.parametrize("config, message", [
    ({"depth": 3}, "unknown model config keys"),
    ({"widths": [8, 8]}, "widths must be 2L"),
    ({"widths": [8, -1, 8]}, "list of positive ints"),
    ({"text_dim": 0}, "'text_dim' must be a positive int"),
    ({"backend": "torchsparse"}, "'backend' must be one of"),
])
def test_bad_configs_are_rejected_with_the_reason(config, message):
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_an_empty_cloud_gives_empty_outputs_in_eval_mode():
    model = build_model(TINY_MODEL_CONFIG).eval()
    with torch.no_grad():
        out = model(SparseTensor(torch.zeros((0, 1)), torch.zeros((0, 4), dtype=torch.int32)))
    assert out["semantic"].shape == (0, TINY_MODEL_CONFIG["text_dim"])
    assert out["features"].shape == (0, TINY_MODEL_CONFIG["widths"][-1])


def test_model_rejects_an_input_of_the_wrong_width():
    model = build_model(TINY_MODEL_CONFIG)
    x = SparseTensor(torch.zeros((1, 3)), torch.zeros((1, 4), dtype=torch.int32))
    with pytest.raises(ValueError, match="expects 1 input channels, got 3"):
        model(x)


def test_resolve_config_fills_defaults_without_sharing_lists():
    resolved = resolve_config({})
    resolved["widths"].append(1)
    assert DEFAULT_MODEL_CONFIG["widths"][-1] == 96
