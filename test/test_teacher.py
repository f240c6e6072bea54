"""MaskCLIP teacher: dense value-path features, input sizes, sampling, feature cache, offline weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clip2scene_core.clip.feature_cache import DenseFeatureCache, camera_images, precompute_dense_features  # noqa: E402
from clip2scene_core.clip.open_clip_loader import resolve_open_clip_weights  # noqa: E402
from clip2scene_core.clip.teacher import MaskCLIPTeacher, interpolate_positional_embedding  # noqa: E402
from clip2scene_core.frame import Camera, Frame  # noqa: E402

TINY_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, layer norms and biases included, so every parameter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def tiny_clip(**vision_overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    vision = {**TINY_CONFIG["vision_cfg"], **vision_overrides}
    return perturbed(open_clip.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=TINY_CONFIG["text_cfg"]))


def random_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def reference_tokens_before_last_block(model, images: np.ndarray) -> torch.Tensor:
    """The ViT up to (not including) its last block, written out for a native-size input."""
    visual = model.visual
    mean = torch.tensor(visual.preprocess_cfg["mean"] if hasattr(visual, "preprocess_cfg")
                        else open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(visual.preprocess_cfg["std"] if hasattr(visual, "preprocess_cfg")
                       else open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    patches = visual.conv1(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([visual.class_embedding.expand(len(images), 1, -1), patches], dim=1)
    tokens = visual.ln_pre(tokens + visual.positional_embedding)
    for block in visual.transformer.resblocks[:-1]:
        tokens = block(tokens)
    return tokens


def to_dense_map(model, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    features = model.visual.ln_post(tokens[:, 1:]) @ model.visual.proj
    return features.transpose(1, 2).reshape(len(tokens), -1, *grid)


def test_dense_features_equal_hand_written_value_path():
    model = tiny_clip()
    images = random_images(2, 32, 32)
    dense = MaskCLIPTeacher("tiny", "none", model=model).dense_features(images)
    with torch.no_grad():
        x = reference_tokens_before_last_block(model, images)
        block = model.visual.transformer.resblocks[-1]
        width = x.shape[-1]
        attn = block.attn
        values = block.ln_1(x) @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
        x = x + attn.out_proj(values)
        x = x + block.mlp(block.ln_2(x))
        expected = to_dense_map(model, x, (4, 4))
    assert dense.shape == (2, 24, 4, 4)
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("custom_block", [False, True], ids=["default_block", "custom_block"])
def test_value_path_is_attention_restricted_to_self(custom_block):
    # Letting every token attend only to itself turns attention into its value path: the block's own
    # forward with a diagonal mask is an independent reference (custom blocks add head scale + norms).
    overrides = {"scale_heads": True, "scale_attn_inner": True, "scale_attn": True} if custom_block else {}
    model = tiny_clip(**overrides)
    images = random_images(1, 32, 32, seed=3)
    dense = MaskCLIPTeacher("tiny", "none", model=model).dense_features(images)
    with torch.no_grad():
        x = reference_tokens_before_last_block(model, images)
        self_only = torch.full((x.shape[1], x.shape[1]), float("-inf"))
        self_only.fill_diagonal_(0.0)
        x = model.visual.transformer.resblocks[-1](x, attn_mask=self_only)
        expected = to_dense_map(model, x, (4, 4))
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("image_size, input_size, grid", [
    ((32, 32), None, (4, 4)),
    ((32, 64), None, (4, 8)),
    ((24, 40), None, (3, 5)),
    ((30, 50), None, (4, 6)),  # rounded to whole patches
    ((45, 70), (16, 24), (2, 3)),  # resized to input_size
])
def test_dense_feature_shapes(image_size, input_size, grid):
    teacher = MaskCLIPTeacher("tiny", "none", input_size=input_size, model=tiny_clip())
    assert teacher.patch_grid(image_size) == grid
    assert teacher.dense_features(random_images(2, *image_size)).shape == (2, 24, *grid)


def test_positional_embedding_keeps_rows_and_columns_apart():
    grid = torch.arange(4.0).view(4, 1, 1).expand(4, 4, 3)  # value = row index, for every column
    embedding = torch.cat([torch.full((1, 3), -7.0), grid.reshape(16, 3)])
    assert interpolate_positional_embedding(embedding, (4, 4), (4, 4)) is embedding
    wide = interpolate_positional_embedding(embedding, (4, 4), (4, 8))
    assert wide.shape == (1 + 32, 3)
    torch.testing.assert_close(wide[0], embedding[0])  # class-token entry untouched
    rows = wide[1:].view(4, 8, 3)
    torch.testing.assert_close(rows, torch.arange(4.0).view(4, 1, 1).expand(4, 8, 3))


def test_images_are_normalised_with_the_models_mean_and_std():
    model = tiny_clip()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    open_clip.model.set_model_preprocess_cfg(
        model, {"size": 32, "mode": "RGB", "mean": mean, "std": std, "interpolation": "bicubic",
                "resize_mode": "shortest", "fill_color": 0})
    images = random_images(1, 32, 32)
    pixels = MaskCLIPTeacher("tiny", "none", model=model).preprocess(images)
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels, expected)


def test_batch_gives_the_same_features_as_single_images():
    teacher = MaskCLIPTeacher("tiny", "none", model=tiny_clip())
    images = random_images(3, 32, 48, seed=5)
    batched = teacher.dense_features(images)
    singles = torch.cat([teacher.dense_features(list(images[i:i + 1])) for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


def test_sampling_at_pixel_centres_matches_the_upsampled_map():
    teacher = MaskCLIPTeacher("tiny", "none", model=tiny_clip())
    height, width = 32, 48
    dense = teacher.dense_features(random_images(2, height, width))
    upsampled = teacher.upsample(dense, (height, width))
    assert upsampled.shape == (2, 24, height, width)
    rng = np.random.default_rng(0)
    cols = np.r_[0, width - 1, rng.integers(0, width, 200)]
    rows = np.r_[0, height - 1, rng.integers(0, height, 200)]
    image = np.r_[0, 1, rng.integers(0, 2, 200)]
    pixels = np.stack([cols + 0.5, rows + 0.5], axis=1)
    sampled = teacher.sample(dense, pixels, (height, width), batch_index=image)
    torch.testing.assert_close(sampled, upsampled[image, :, rows, cols], rtol=1e-5, atol=1e-5)
    single = teacher.sample(dense[1], pixels, (height, width))
    torch.testing.assert_close(single, upsampled[1][:, rows, cols].T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch_index"):
        teacher.sample(dense, pixels, (height, width))


def test_global_image_embedding_is_untouched_by_the_teacher():
    model = tiny_clip()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_image(x)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        MaskCLIPTeacher("tiny", "none", model=model).dense_features(random_images(2, 32, 64))
        after = model.encode_image(x)
    assert torch.equal(before, after)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_bad_images_are_rejected():
    teacher = MaskCLIPTeacher("tiny", "none", model=tiny_clip())
    with pytest.raises(ValueError, match="uint8"):
        teacher.dense_features(np.zeros((1, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="share a size"):
        teacher.dense_features([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)])


def test_vit_b16_dense_map_for_a_224x416_image():
    teacher = MaskCLIPTeacher("ViT-B-16", "none")  # random weights: nothing to download
    dense = teacher.dense_features(random_images(1, 224, 416))
    assert dense.shape == (1, 512, 14, 26)
    assert torch.isfinite(dense).all()


def test_precomputed_features_are_reused_and_match_the_live_teacher(tmp_path):
    teacher = MaskCLIPTeacher("tiny", "none", model=tiny_clip())
    frames = [
        Frame(points=np.zeros((1, 3), np.float32), frame_id=f"f{i}",
              cameras=[Camera(name, random_images(1, 32, 48, seed=10 * i + j)[0], np.eye(3), np.eye(4))
                       for j, name in enumerate(["front", "back"])])
        for i in range(2)
    ]
    cache = DenseFeatureCache(tmp_path, teacher.spec)
    assert precompute_dense_features(teacher, camera_images(frames), cache, batch_size=3) == 4
    assert precompute_dense_features(teacher, camera_images(frames), cache) == 0
    assert json.loads((cache.folder / "teacher.json").read_text()) == teacher.spec
    cached = cache.get("f1/back")
    assert cached.dtype == torch.float16
    live = teacher.dense_features(frames[1].cameras[1].image)[0]
    torch.testing.assert_close(cached.float(), live, rtol=2e-3, atol=2e-3)
    assert cache.get("f9/front") is None


def test_missing_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("open_clip must not be asked to build (or download) anything")

    monkeypatch.setattr(open_clip, "create_model", no_model)
    with pytest.raises(FileNotFoundError, match="--clip-pretrained"):
        MaskCLIPTeacher("ViT-B-16", "openai", cache_dir=tmp_path)
    missing = tmp_path / "nowhere" / "vit.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        MaskCLIPTeacher("ViT-B-16", str(missing))
    with pytest.raises(ValueError, match="openai"):
        resolve_open_clip_weights("ViT-B-16", "no_such_tag")
    with pytest.raises(ValueError, match="architecture"):
        resolve_open_clip_weights("No-Such-ViT", "openai")


@pytest.fixture
def tiny_architecture(tmp_path):
    """A registered open_clip architecture name for the tiny config (open_clip's own registry)."""
    config = tmp_path / "Tiny-ViT-Test.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    return "Tiny-ViT-Test"


def test_local_checkpoint_file_is_loaded(tmp_path, tiny_architecture):
    model = perturbed(open_clip.create_model(tiny_architecture, pretrained=None), seed=4)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    loaded = MaskCLIPTeacher(tiny_architecture, str(checkpoint))
    images = random_images(1, 32, 32)
    torch.testing.assert_close(loaded.dense_features(images),
                               MaskCLIPTeacher("tiny", "none", model=model).dense_features(images))


def test_cached_tag_is_loaded_with_its_quick_gelu_and_mean_std(tmp_path, tiny_architecture, monkeypatch):
    source = perturbed(open_clip.create_model(tiny_architecture, pretrained=None, force_quick_gelu=True))
    torch.save(source.state_dict(), tmp_path / "tiny-weights.pt")
    tag = {"url": "https://example.invalid/weights/tiny-weights.pt", "hf_hub": "", "quick_gelu": True,
           "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    real_lookup = open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda model, name: dict(tag) if name == "cached_tag" else real_lookup(model, name))
    teacher = MaskCLIPTeacher(tiny_architecture, "cached_tag", cache_dir=tmp_path)
    assert isinstance(teacher.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    torch.testing.assert_close(teacher.mean.flatten(), torch.tensor(tag["mean"]))
    torch.testing.assert_close(teacher.std.flatten(), torch.tensor(tag["std"]))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher.model.encode_image(x), source.encode_image(x))
