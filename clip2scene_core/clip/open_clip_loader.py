"""Build an open_clip model from weights that are already on this machine.

``pretrained`` is an open_clip tag (``"openai"``, ``"laion2b_s34b_b88k"``, ...), a local checkpoint
file, or one of :data:`RANDOM_WEIGHTS` for a randomly initialised model (tests, benchmarks). A tag is
resolved to a file in open_clip's own caches (``~/.cache/clip`` for URL downloads, the Hugging Face hub
cache for hub downloads) *before* open_clip is called, and open_clip then only ever sees a local file:
a missing download fails at once with a message that says how to provide the weights.

OpenAI's own checkpoints were trained with QuickGELU; for a tag the loader takes that (and the image
mean/std) from open_clip's tag table. For an OpenAI checkpoint given as a *file*, name the
``-quickgelu`` architecture (e.g. ``ViT-B-16-quickgelu``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from clip2scene_core.clip.offline import hub_offline

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS = ("", "none", "random")  # ``pretrained`` values that mean "random initialisation"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
_HUB_DEFAULT_FILE = "open_clip_pytorch_model.bin"
_HUB_SAFETENSORS_FILE = "open_clip_model.safetensors"


@dataclass(frozen=True)
class ResolvedWeights:
    """Where an open_clip model's weights come from.

    ``path`` is the local checkpoint (None = random initialisation); ``tag_config`` is open_clip's
    table entry for a pretrained tag (mean/std, quick_gelu, ...), empty for a file or random weights.
    """

    path: Optional[Path]
    tag_config: dict = field(default_factory=dict)


def is_random_weights(pretrained: Optional[str]) -> bool:
    """True when ``pretrained`` asks for a randomly initialised model (None, "", "none", "random")."""
    return pretrained is None or str(pretrained).strip().lower() in RANDOM_WEIGHTS


def _url_cache_candidates(url: str, cache_dir: Optional[Path]) -> list[Path]:
    folder = cache_dir if cache_dir is not None else Path("~/.cache/clip").expanduser()
    return [folder / os.path.basename(url)]


def _hub_files(hf_hub: str) -> tuple[str, list[str]]:
    """``"org/repo/file"`` or ``"org/repo/"`` -> (repo id, files to look for, safetensors first)."""
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or _HUB_DEFAULT_FILE
    if filename == _HUB_DEFAULT_FILE:
        return repo_id, [_HUB_SAFETENSORS_FILE, filename]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def _find_cached_tag_file(tag_config: dict, cache_dir: Optional[Path]) -> tuple[Optional[Path], list[str]]:
    """Look for a tag's checkpoint in open_clip's caches without any network access.

    Returns (path or None, human-readable list of the places looked at).
    """
    looked: list[str] = []
    if tag_config.get("file"):
        path = Path(tag_config["file"])
        return (path if path.is_file() else None), [str(path)]
    if tag_config.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filenames = _hub_files(tag_config["hf_hub"])
        for filename in filenames:
            looked.append(f"Hugging Face cache {repo_id}/{filename}")
            cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            if isinstance(cached, str) and Path(cached).is_file():
                return Path(cached), looked
    if tag_config.get("url"):
        for path in _url_cache_candidates(tag_config["url"], cache_dir):
            looked.append(str(path))
            if path.is_file():
                return path, looked
    return None, looked


def resolve_open_clip_weights(
    model_name: str, pretrained: Optional[str], cache_dir: Optional[Union[str, Path]] = None
) -> ResolvedWeights:
    """Turn ``pretrained`` (tag, file or random) into a local checkpoint path, never downloading.

    Raises ValueError for an unknown architecture or tag, FileNotFoundError (naming the places looked
    at and how to provide the weights) when a tag's or a file's weights are not on this machine.
    """
    import open_clip

    if open_clip.get_model_config(model_name) is None:
        raise ValueError(
            f"unknown open_clip architecture {model_name!r} (see open_clip.list_models(), e.g. 'ViT-B-16')"
        )
    if is_random_weights(pretrained):
        return ResolvedWeights(path=None)
    pretrained = str(pretrained)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    tag_config = open_clip.get_pretrained_cfg(model_name, pretrained)
    if tag_config:
        path, looked = _find_cached_tag_file(tag_config, cache)
        if path is None:
            raise FileNotFoundError(
                f"open_clip weights {model_name}/{pretrained} are not on this machine (looked in: "
                f"{'; '.join(looked)}). Provide them by either (a) filling the cache once on a machine "
                f"with network access: python -c \"import open_clip; open_clip.create_model("
                f"'{model_name}', pretrained='{pretrained}')\" and copying ~/.cache/clip or the "
                f"Hugging Face cache (HF_HOME) here, or (b) passing the checkpoint file itself as "
                f"pretrained (e.g. --clip-pretrained /path/to/{model_name}.pt)."
            )
        return ResolvedWeights(path=path, tag_config=dict(tag_config))
    path = Path(pretrained).expanduser()
    if path.is_file():
        return ResolvedWeights(path=path)
    if os.sep in pretrained or "/" in pretrained or path.suffix in _CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"open_clip checkpoint file not found: {path}")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise ValueError(
        f"{pretrained!r} is neither a pretrained tag of {model_name} (known: {', '.join(tags) or 'none'}) "
        f"nor an existing checkpoint file"
    )


def load_open_clip(
    model_name: str = "ViT-B-16",
    pretrained: Optional[str] = "openai",
    device: Union[str, torch.device] = "cpu",
    cache_dir: Optional[Union[str, Path]] = None,
) -> nn.Module:
    """An open_clip CLIP model in eval mode with frozen parameters, from local weights only.

    Args:
        model_name: open_clip architecture name, e.g. ``"ViT-B-16"``.
        pretrained: tag, checkpoint path, or a :data:`RANDOM_WEIGHTS` value (random initialisation).
        device: where the model lives.
        cache_dir: open_clip/Hugging Face cache folder to look in (default: their standard locations).

    The model's preprocessing config (``open_clip.get_model_preprocess_cfg``) carries the image mean/std
    of the weights' training data.
    """
    import open_clip

    weights = resolve_open_clip_weights(model_name, pretrained, cache_dir)
    if weights.path is None:
        logger.warning("open_clip %s: random initialisation (no pretrained weights)", model_name)
    else:
        logger.info("open_clip %s: loading weights from %s", model_name, weights.path)
    with hub_offline():
        model = open_clip.create_model(
            model_name,
            pretrained=str(weights.path) if weights.path is not None else None,
            device=device,
            force_quick_gelu=bool(weights.tag_config.get("quick_gelu", False)),
            force_preprocess_cfg=weights.tag_config or None,
            pretrained_text=False,  # never fetch tower weights from the hub
        )
    model.eval()
    model.requires_grad_(False)
    return model
