"""MaskCLIP dense pixel features from an open_clip ViT: the 2D teacher of CLIP2Scene.

MaskCLIP (Zhou et al., ECCV 2022) keeps CLIP frozen and reads a dense feature per image patch: in the
last visual transformer block the attention is replaced by its value path, so each patch token keeps
its own content instead of being pooled towards the class token, and the result is mapped into the
joint image-text space with CLIP's own ``ln_post`` and ``proj`` (MaskCLIP, Zhou et al., ECCV 2022). Point-pixel
pairs then read the map with bilinear sampling (:meth:`MaskCLIPTeacher.sample`), which agrees exactly
with the bilinearly upsampled map (:meth:`MaskCLIPTeacher.upsample`).

The model itself is never modified: the dense path is computed from its modules, so ``encode_image``
(the global CLS path) stays exactly as loaded. Costs: docs/method.md.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip2scene_core.clip.open_clip_loader import load_open_clip

logger = logging.getLogger(__name__)

ImageBatch = Union[np.ndarray, Tensor, Sequence[Union[np.ndarray, Tensor]]]


def _stack_images(images: ImageBatch) -> Tensor:
    """uint8 RGB images -> (B, H, W, 3) uint8 tensor; a single (H, W, 3) image becomes B = 1."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images: empty list")
        shapes = {tuple(np.shape(image)) for image in images}
        if len(shapes) != 1:
            raise ValueError(f"images in one batch must share a size, got {sorted(shapes)}")
        # np.stack copies, so read-only inputs (memory-mapped or message buffers) are fine
        batch = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
    else:
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()
        batch = torch.as_tensor(images)
        if batch.ndim == 3:
            batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 RGB (B, H, W, 3) or (H, W, 3), got {tuple(batch.shape)} {batch.dtype}"
        )
    return batch


def interpolate_positional_embedding(positional_embedding: Tensor, source_grid: tuple[int, int],
                                     target_grid: tuple[int, int]) -> Tensor:
    """Resize a ViT positional embedding to another patch grid (e.g. 14x14 -> 14x26 for 224x416 input).

    Args:
        positional_embedding: (1 + gh * gw, C), class-token entry first, patches row-major.
        source_grid: (gh, gw) grid the embedding was trained for.
        target_grid: (h, w) patch grid of the input.

    Returns:
        (1 + h * w, C); the class-token entry is kept, the patch entries are resized bicubically as a
        (C, gh, gw) image (MaskCLIP's choice). Returned unchanged when the grids agree.
    """
    if tuple(target_grid) == tuple(source_grid):
        return positional_embedding
    class_entry, patch_entries = positional_embedding[:1], positional_embedding[1:]
    channels = patch_entries.shape[-1]
    grid = patch_entries.reshape(1, source_grid[0], source_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(target_grid), mode="bicubic", align_corners=False)
    patch_entries = grid.permute(0, 2, 3, 1).reshape(-1, channels).to(positional_embedding.dtype)
    return torch.cat([class_entry, patch_entries], dim=0)


def value_path_attention(block: nn.Module, x: Tensor) -> Tensor:
    """MaskCLIP's replacement of a block's attention branch: ``out_proj(v(ln_1(x)))`` per token.

    Equivalent to the block's attention when every token may attend only to itself. Handles
    open_clip's ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) and
    ``CustomResidualAttentionBlock`` (open_clip ``Attention``, with its optional head scale, inner norm
    and post-attention norm). x: (B, L, C) -> (B, L, C), before the residual and layer scale.
    """
    attn = block.attn
    normed = block.ln_1(x)
    width = normed.shape[-1]
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    values = F.linear(normed, attn.in_proj_weight[2 * width:], bias)
    if isinstance(attn, nn.MultiheadAttention):
        return attn.out_proj(values)
    if getattr(attn, "head_scale", None) is not None:
        batch, tokens, _ = values.shape
        values = values.reshape(batch, tokens, attn.num_heads, -1).transpose(1, 2) * attn.head_scale
        values = values.transpose(1, 2).reshape(batch, tokens, width)
    return block.ln_attn(attn.out_proj(attn.ln_inner(values)))


def maskclip_last_block(block: nn.Module, x: Tensor) -> Tensor:
    """The last visual block with attention replaced by the value path (MaskCLIP's key change).

    ``x + ls_1(out_proj(v(ln_1(x))))``, then the block's MLP branch ``+ ls_2(mlp(ln_2(.)))``.
    x: (B, L, C) tokens -> (B, L, C).
    """
    x = x + block.ls_1(value_path_attention(block, x))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class MaskCLIPTeacher:
    """Frozen open_clip ViT that produces MaskCLIP dense features in CLIP's image-text space.

    Args:
        model_name: open_clip architecture (default ``ViT-B-16``).
        pretrained: open_clip tag, local checkpoint path, or "none" for random weights
            (see :mod:`clip2scene_core.clip.open_clip_loader`; nothing is downloaded).
        device: torch device for the ViT.
        input_size: (H, W) pixels the images are resized to before the ViT (e.g. (224, 416) for
            nuScenes); None keeps each image's size, rounded to whole patches.
        model: an already built open_clip model to use instead of loading one (tests, benchmarks);
            ``model_name``/``pretrained`` then only label it.
        cache_dir: open_clip/Hugging Face cache to look for tagged weights in.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: Optional[str] = "openai",
        device: Union[str, torch.device] = "cpu",
        input_size: Optional[tuple[int, int]] = None,
        *,
        model: Optional[nn.Module] = None,
        cache_dir: Optional[Union[str, Path]] = None,
    ) -> None:
        import open_clip
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        self.device = torch.device(device)
        self.model_name = model_name
        self.pretrained = pretrained
        self.input_size = tuple(int(v) for v in input_size) if input_size is not None else None
        if model is None:
            model = load_open_clip(model_name, pretrained, self.device, cache_dir)
        self.model = model.to(self.device).eval()
        self.visual = self.model.visual
        for required in ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post"):
            if not hasattr(self.visual, required):
                raise ValueError(
                    f"{model_name}: MaskCLIP needs an open_clip VisionTransformer (no {required})")
        if getattr(self.visual, "attn_pool", None) is not None:
            raise ValueError(f"{model_name}: attentional-pooling vision towers are not supported")
        # A model built by hand has no preprocess config: open_clip's defaults are OpenAI's mean/std.
        preprocess = merge_preprocess_dict(PreprocessCfg(), open_clip.get_model_preprocess_cfg(self.model))
        self.mean = torch.tensor(preprocess["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.patch_size = tuple(int(v) for v in self.visual.patch_size)
        self.trained_grid = tuple(int(v) for v in self.visual.grid_size)
        self.dim = int(self.visual.output_dim)  # D of the dense map = CLIP's joint embedding size
        self._positional_cache: dict[tuple[int, int], Tensor] = {}

    @property
    def spec(self) -> dict:
        """What determines the features: model, weights and input size (feature-cache key)."""
        return {
            "model_name": self.model_name,
            "pretrained": str(self.pretrained),
            "input_size": list(self.input_size) if self.input_size else None,
        }

    def network_input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) the ViT sees for an image of ``image_size``: ``input_size`` or whole patches."""
        if self.input_size is not None:
            return self.input_size
        patch_h, patch_w = self.patch_size
        return (max(patch_h, round(image_size[0] / patch_h) * patch_h),
                max(patch_w, round(image_size[1] / patch_w) * patch_w))

    def patch_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) patch grid of the dense map for an image of ``image_size`` (H, W) pixels."""
        height, width = self.network_input_size(image_size)
        return height // self.patch_size[0], width // self.patch_size[1]

    def preprocess(self, images: ImageBatch) -> Tensor:
        """uint8 RGB (B, H, W, 3) -> (B, 3, H', W') float32, resized and normalised with CLIP's mean/std."""
        batch = _stack_images(images).to(self.device)
        pixels = batch.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.network_input_size(tuple(batch.shape[1:3]))
        if tuple(pixels.shape[-2:]) != size:
            pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
            pixels = pixels.clamp_(0.0, 1.0)
        return (pixels - self.mean) / self.std

    def _positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        if grid not in self._positional_cache:
            self._positional_cache[grid] = interpolate_positional_embedding(
                self.visual.positional_embedding.detach(), self.trained_grid, grid)
        return self._positional_cache[grid]

    @torch.no_grad()
    def dense_features(self, images: ImageBatch) -> Tensor:
        """MaskCLIP dense features at the patch grid.

        Args:
            images: (B, H, W, 3) uint8 RGB (numpy or torch), a list of same-size (H, W, 3) images, or
                one (H, W, 3) image.

        Returns:
            (B, D, h, w) float32 on the teacher's device, D = CLIP embedding dim, (h, w) =
            :meth:`patch_grid`; not normalised (cosine users normalise).
        """
        visual = self.visual
        pixels = self.preprocess(images).to(visual.conv1.weight.dtype)
        patches = visual.conv1(pixels)  # (B, C, h, w)
        batch, width, grid_h, grid_w = patches.shape
        tokens = patches.reshape(batch, width, -1).permute(0, 2, 1)
        class_token = visual.class_embedding.to(tokens.dtype).view(1, 1, -1).expand(batch, -1, -1)
        tokens = torch.cat([class_token, tokens], dim=1)
        tokens = tokens + self._positional_embedding((grid_h, grid_w)).to(tokens.dtype)
        tokens = visual.ln_pre(tokens)
        blocks = visual.transformer.resblocks
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            tokens = tokens.transpose(0, 1)
        for block in blocks[:-1]:
            tokens = block(tokens)
        if not batch_first:
            tokens = tokens.transpose(0, 1)
        tokens = maskclip_last_block(blocks[-1], tokens)
        features = visual.ln_post(tokens[:, 1:])
        if visual.proj is not None:
            features = features @ visual.proj
        return features.transpose(1, 2).reshape(batch, -1, grid_h, grid_w).float()

    @staticmethod
    def upsample(dense: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Bilinear upsampling of a dense map to pixels.

        dense: (B, D, h, w) or (D, h, w) -> (B, D, H, W) or (D, H, W) for ``image_size`` = (H, W).
        Pixel (row i, column j) takes the map's value at its centre (j + 0.5, i + 0.5).
        """
        squeeze = dense.ndim == 3
        batch = dense[None] if squeeze else dense
        out = F.interpolate(batch, size=tuple(image_size), mode="bilinear", align_corners=False)
        return out[0] if squeeze else out

    @staticmethod
    def sample(dense: Tensor, pixels: Union[Tensor, np.ndarray], image_size: tuple[int, int],
               batch_index: Optional[Union[Tensor, np.ndarray]] = None) -> Tensor:
        """Bilinear reading of a dense map at pixel coordinates (the point-pixel pairs).

        Args:
            dense: (D, h, w) or (B, D, h, w) dense map covering the whole image.
            pixels: (M, 2) float, (u = column, v = row) in pixels of the original image, pixel
                centres at +0.5 (as ``geometry.project_points_to_image`` returns them).
            image_size: (H, W) of the original image in pixels.
            batch_index: (M,) int64 image of each pair; needed when B > 1.

        Returns:
            (M, D) float32: equal to ``upsample(dense, image_size)`` at integer pixel (floor(v),
            floor(u)) when (u, v) is that pixel's centre, and bilinear in between (edges clamp).
        """
        if dense.ndim == 3:
            dense = dense[None]
        pixels = torch.as_tensor(pixels, dtype=torch.float32, device=dense.device)
        if pixels.ndim != 2 or pixels.shape[1] != 2:
            raise ValueError(f"pixels must be (M, 2) (u, v), got {tuple(pixels.shape)}")
        height, width = image_size
        # grid_sample with align_corners=False maps [-1, 1] onto the image's outer pixel edges, the
        # same convention as F.interpolate(..., align_corners=False) in upsample().
        grid = torch.stack([2.0 * pixels[:, 0] / width - 1.0, 2.0 * pixels[:, 1] / height - 1.0], dim=-1)
        if dense.shape[0] == 1:
            return _grid_read(dense, grid)
        if batch_index is None:
            raise ValueError(f"batch_index is required to sample a batch of {dense.shape[0]} maps")
        batch_index = torch.as_tensor(batch_index, dtype=torch.int64, device=dense.device)
        if batch_index.shape != (pixels.shape[0],):
            raise ValueError(f"batch_index must be ({pixels.shape[0]},), got {tuple(batch_index.shape)}")
        out = dense.new_empty((pixels.shape[0], dense.shape[1]))
        for image in torch.unique(batch_index).tolist():
            rows = batch_index == image
            out[rows] = _grid_read(dense[image:image + 1], grid[rows])
        return out.float()


def _grid_read(dense: Tensor, grid: Tensor) -> Tensor:
    """(1, D, h, w) map, (M, 2) normalised (x, y) -> (M, D) bilinear values, border-clamped."""
    values = F.grid_sample(dense, grid.view(1, 1, -1, 2).to(dense.dtype), mode="bilinear",
                           padding_mode="border", align_corners=False)
    return values[0, :, 0, :].transpose(0, 1).float()
