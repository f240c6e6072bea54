"""The training text space: class vocabularies and their text embeddings ``t_c``.

The ``text`` config section (shared by pretraining, fine-tuning and evaluation)::

    encoder: minilm | open_clip (the MaskCLIP teacher's text tower) | {kind, name, weights}
    classes: None (the dataset's config/classes/<kind>.yaml) | a vocabulary YAML path | [names]
    templates: None (the 85-template ensemble) | [templates with one "{}"]
    cache_dir: on-disk text-embedding cache
    embeddings_file: a `clip2scene encode-text` file to use instead of encoding
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from torch import Tensor

from clip2scene_core.clip.prompts import TEMPLATES, ClassPrompt, encode_classes, load_class_vocabulary
from clip2scene_core.clip.text_encoders import same_text_space

DEFAULT_TEXT_CONFIG: dict[str, Any] = {
    "encoder": "minilm",
    "classes": None,
    "templates": None,
    "cache_dir": "~/.cache/clip2scene/text",
    "embeddings_file": None,
}


def class_vocabulary(text_config: Mapping[str, Any], kind: str, class_names: Sequence[str]) -> list[ClassPrompt]:
    """The training classes (label order) as prompts: the dataset's vocabulary file by default."""
    source = text_config["classes"]
    if source is None:
        classes = load_class_vocabulary(kind)
    elif isinstance(source, (list, tuple)):
        classes = [ClassPrompt(name=str(name)) for name in source]
    else:
        classes = load_class_vocabulary(source)
    if len(classes) != len(class_names):
        raise ValueError(f"the class vocabulary has {len(classes)} classes but the {kind} dataset has "
                         f"{len(class_names)} ({list(class_names)})")
    return classes


def text_encoder_spec(text_config: Mapping[str, Any], clip_model: str = "ViT-B-16",
                      clip_pretrained: str = "openai") -> dict:
    """The configured text encoder as a ``{kind, name, weights}`` spec.

    ``open_clip`` names the text tower of ``clip_model`` / ``clip_pretrained`` (the MaskCLIP teacher's).
    """
    from clip2scene_core.clip.text_encoders import minilm_spec, open_clip_spec

    encoder = text_config["encoder"]
    if encoder == "minilm":
        return minilm_spec()
    if encoder == "open_clip":
        return open_clip_spec(clip_model, str(clip_pretrained))
    if isinstance(encoder, Mapping):
        return dict(encoder)
    raise ValueError(f"text.encoder must be 'minilm', 'open_clip' or a {{kind, name, weights}} mapping, "
                     f"got {encoder!r}")


def class_text_embeddings(text_config: Mapping[str, Any], classes: Sequence[ClassPrompt],
                          spec: Optional[Mapping[str, Any]] = None,
                          stored: Optional[tuple[Sequence[str], Tensor]] = None) -> tuple[Tensor, dict]:
    """Class text embeddings ``t_c`` (C, D), L2-normalised, and the spec of their text space.

    In order of preference: ``stored`` (class names, embeddings) from a checkpoint when its classes
    are these and no templates are configured; ``text.embeddings_file`` (its class names must match,
    and its space must be ``spec`` when given); else the classes encoded through the prompt templates
    by the encoder ``spec`` (default: the configured ``text.encoder``), cached in ``text.cache_dir``.
    """
    names = [c.name for c in classes]
    if stored is not None and list(stored[0]) == names and text_config["templates"] is None and spec is not None:
        return stored[1].float().cpu(), dict(spec)
    if text_config["embeddings_file"]:
        from clip2scene_core.clip.embedding_file import load_text_embeddings

        content = load_text_embeddings(text_config["embeddings_file"])
        if list(content["class_names"]) != names:
            raise ValueError(f"{text_config['embeddings_file']} holds classes {content['class_names']}, "
                             f"but {names} are needed")
        if spec is not None and not same_text_space(content["text_encoder"], spec):
            raise ValueError(f"{text_config['embeddings_file']} is in text space {content['text_encoder']}, "
                             f"not the checkpoint's {dict(spec)}")
        return content["embeddings"].float(), dict(content["text_encoder"])
    from clip2scene_core.clip.text_encoders import build_text_encoder

    encoder = build_text_encoder(spec or text_encoder_spec(text_config))
    embeddings = encode_classes(encoder, classes, text_config["templates"] or TEMPLATES,
                                cache_dir=text_config["cache_dir"])
    return embeddings, encoder.spec
