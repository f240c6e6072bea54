"""Prompt templates, class vocabularies and class text embeddings (with an on-disk cache).

A class embedding is the L2-normalised mean of the text embeddings of every template filled with every
synonym of the class (CLIP's prompt ensembling, Radford et al., 2021). Vocabularies live in
``config/classes/<dataset>.yaml``, classes in the dataset's label order (label ``c`` = entry ``c - 1``):

```yaml
dataset: nuscenes
classes:
  - name: driveable_surface          # the dataset's identifier
    display: driveable surface       # optional; default: name with "_" -> " "
    synonyms: [road, driveable surface]   # optional; phrases put into the templates
things: [car, pedestrian]            # optional; the countable classes (see load_thing_classes)
```
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from clip2scene_core.atomic_file import torch_save_atomically
from clip2scene_core.clip.text_encoders import TextEncoder
from clip2scene_core.objects.clustering import validated_thing_names

logger = logging.getLogger(__name__)

# The 80 ImageNet prompt templates of CLIP's prompt ensemble (Radford et al., 2021).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
# Scene templates (MaskCLIP's style): the teacher looks at parts of street and indoor scenes.
SCENE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {} in the scene.", "there is a {} in the scene.", "there is the {} in the scene.",
    "this is a {} in the scene.", "this is the {} in the scene.",
)
TEMPLATES: tuple[str, ...] = IMAGENET_TEMPLATES + SCENE_TEMPLATES  # 85

DATASET_KINDS = ("synthetic", "nuscenes", "semantickitti", "scannet")


@dataclass(frozen=True)
class ClassPrompt:
    """One class of a vocabulary.

    Attributes:
        name: the dataset's identifier (e.g. ``driveable_surface``) or a free-form class name.
        synonyms: phrases put into the templates; empty means the display name alone.
        display: human-readable name; empty means ``name`` with underscores as spaces.
    """

    name: str
    synonyms: tuple[str, ...] = ()
    display: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"class name must be a non-empty string, got {self.name!r}")
        synonyms = tuple(self.synonyms) if not isinstance(self.synonyms, str) else (self.synonyms,)
        if any(not isinstance(s, str) or not s.strip() for s in synonyms):
            raise ValueError(f"class {self.name!r}: synonyms must be non-empty strings, got {synonyms!r}")
        object.__setattr__(self, "synonyms", synonyms)

    @property
    def display_name(self) -> str:
        return self.display or self.name.replace("_", " ")

    @property
    def phrases(self) -> tuple[str, ...]:
        """The phrases the templates are filled with (synonyms, or the display name)."""
        return self.synonyms or (self.display_name,)


def as_class_prompt(item: Union[str, ClassPrompt]) -> ClassPrompt:
    """A class given by name (e.g. from a ROS parameter) or as a ClassPrompt -> ClassPrompt."""
    return item if isinstance(item, ClassPrompt) else ClassPrompt(name=item)


#: Entry-point group of functions returning further folders of vocabulary files (the installing
#: package registers where it put ``config/classes``).
VOCABULARY_DIRS_GROUP = "clip2scene.vocabulary_dirs"


def builtin_vocabulary_dirs() -> list[Path]:
    """Where ``config/classes`` is looked for: the source tree, then the folders that installed
    packages register in the ``clip2scene.vocabulary_dirs`` entry-point group, in name order."""
    folders = [Path(__file__).resolve().parents[2] / "config" / "classes"]
    for point in sorted(entry_points(group=VOCABULARY_DIRS_GROUP), key=lambda point: point.name):
        folders.extend(Path(folder) for folder in point.load()())
    return folders


def _vocabulary_path(source: Union[str, Path]) -> Path:
    path = Path(source).expanduser()
    if str(source) in DATASET_KINDS:
        candidates = [folder / f"{source}.yaml" for folder in builtin_vocabulary_dirs()]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"class vocabulary for {source!r} not found (looked at {', '.join(map(str, candidates))})"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"class vocabulary file not found: {path} (give a YAML path or one of {', '.join(DATASET_KINDS)})"
        )
    return path


def load_class_vocabulary(source: Union[str, Path]) -> list[ClassPrompt]:
    """Classes of a vocabulary YAML file, or of a dataset kind ("nuscenes", "semantickitti",
    "scannet", "synthetic"), in label order (label ``c`` is entry ``c - 1``)."""
    path = _vocabulary_path(source)
    with open(path, "r", encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    entries = document.get("classes") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a top-level 'classes' list")
    classes = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"{path}: classes[{index}] must be a mapping with a 'name', got {entry!r}")
        unknown = set(entry) - {"name", "display", "synonyms"}
        if unknown:
            raise ValueError(f"{path}: classes[{index}] has unknown keys {sorted(unknown)}")
        try:
            classes.append(ClassPrompt(name=entry["name"], synonyms=tuple(entry.get("synonyms") or ()),
                                       display=entry.get("display") or ""))
        except ValueError as error:
            raise ValueError(f"{path}: classes[{index}]: {error}") from error
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate class names {duplicates}")
    return classes


def load_thing_classes(source: Union[str, Path]) -> tuple[str, ...]:
    """The *thing* classes of a vocabulary (a YAML path or a dataset kind, as for
    `load_class_vocabulary`): its optional top-level ``things`` list of class names, the countable
    classes whose points group into objects; () when the file has none.

    Raises:
        ValueError naming the file when ``things`` is not a list of its class names without repeats.
    """
    path = _vocabulary_path(source)
    names = [item.name for item in load_class_vocabulary(path)]
    with open(path, "r", encoding="utf-8") as handle:
        things = yaml.safe_load(handle).get("things", [])
    return validated_thing_names(things, names, str(path))


def class_prompts(phrases: Sequence[str], templates: Sequence[str] = TEMPLATES) -> list[str]:
    """Every template filled with every phrase: len(phrases) * len(templates) prompts, phrase-major."""
    return [template.format(phrase) for phrase in phrases for template in templates]


def ensemble_embedding(prompt_embeddings: Tensor) -> Tensor:
    """CLIP prompt ensembling: (P, D) L2-normalised prompt embeddings -> (D,) normalised mean."""
    return F.normalize(prompt_embeddings.float().mean(dim=0), dim=0)


def _cache_key(encoder_spec: dict, templates: Sequence[str], item: ClassPrompt) -> str:
    """Hash of what determines a class embedding: encoder (kind, model, weights), templates, phrases."""
    payload = json.dumps(
        {"encoder": [encoder_spec.get(k) for k in ("kind", "name", "weights")],
         "templates": list(templates), "class": item.name, "phrases": list(item.phrases)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


def _read_cached(path: Path) -> Optional[Tensor]:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["embedding"]
    except Exception as error:  # a torn or foreign file: recompute rather than fail
        logger.warning("ignoring unreadable text-embedding cache file %s (%s)", path, error)
        return None


def validate_prompt_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Return the templates or raise ValueError naming the first bad one.

    A template must hold exactly one ``{}`` and format with a class name: ``'a {} {x}'`` has one
    ``{}`` but fails when filled, so each is filled with a test name here, before any encoding.
    """
    if isinstance(templates, str):
        raise ValueError("prompt templates must be a list of strings, not one string")
    checked = tuple(str(template) for template in templates)
    if not checked:
        raise ValueError("prompt template list is empty")
    for template in checked:
        if template.count("{}") != 1:
            raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}'")
        try:
            filled = template.format("test name")
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"prompt template {template!r} cannot be filled with a class name: "
                             f"{type(error).__name__} {error}") from None
        if "test name" not in filled:
            raise ValueError(f"prompt template {template!r} does not insert the class name")
    return checked


def encode_classes(
    encoder: TextEncoder,
    classes: Sequence[Union[str, ClassPrompt]],
    templates: Sequence[str] = TEMPLATES,
    cache_dir: Optional[Union[str, Path]] = None,
) -> Tensor:
    """Class text embeddings t_c by prompt ensembling, cached on disk when ``cache_dir`` is given.

    Args:
        encoder: the text space.
        classes: class names (free-form strings) or :class:`ClassPrompt` entries, in label order.
        templates: format strings with one ``{}``.
        cache_dir: folder for one small file per (encoder, templates, class, synonyms); None = no cache.

    Returns:
        (C, encoder.dim) float32 CPU tensor, rows L2-normalised.
    """
    items = [as_class_prompt(item) for item in classes]
    if not items:
        raise ValueError("classes: empty class list")
    templates = list(validate_prompt_templates(templates))
    spec = encoder.spec
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    paths = [cache / f"{_cache_key(spec, templates, item)}.pt" if cache else None for item in items]
    embeddings: list[Optional[Tensor]] = [_read_cached(path) if path else None for path in paths]
    missing = [i for i, embedding in enumerate(embeddings) if embedding is None]
    if missing:
        prompts_per_class = [class_prompts(items[i].phrases, templates) for i in missing]
        logger.info("encoding %d classes (%d prompts) with %s", len(missing),
                    sum(map(len, prompts_per_class)), spec.get("name"))
        encoded = encoder.encode([prompt for prompts in prompts_per_class for prompt in prompts])
        start = 0
        for i, prompts in zip(missing, prompts_per_class):
            embeddings[i] = ensemble_embedding(encoded[start:start + len(prompts)])
            start += len(prompts)
            if paths[i] is not None:
                torch_save_atomically(
                    {"embedding": embeddings[i], "class": items[i].name, "encoder": dict(spec)}, paths[i])
    return torch.stack([e.float() for e in embeddings])
