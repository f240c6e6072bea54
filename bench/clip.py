"""Cost of the CLIP side: MaskCLIP dense features and class text embeddings (ViT-B-16, random init).

Prints, per device (CPU, and CUDA when available):
  * dense-feature time per 224x416 image (batch 1 and a small batch),
  * text-encoding time per class (85 templates) padded to the longest prompt vs padded to 77 tokens,
    their ratio measured side by side, and the largest difference between the two embeddings.

Random weights cost the same as trained ones, so nothing is downloaded.

    .venv/bin/python bench/clip.py [--classes 1] [--images 2] [--batch 4]
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Callable

import numpy as np
import torch


def timed(function: Callable[[], Any], device: torch.device, repeats: int,
          warm_up: bool = True) -> tuple[float, Any]:
    """(best wall time in seconds of ``repeats`` runs, after one warm-up run if asked; last result)."""
    def run() -> tuple[float, Any]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, result

    result = run()[1] if warm_up else None
    best = float("inf")
    for _ in range(repeats):
        seconds, result = run()
        best = min(best, seconds)
    return best, result


def bench_device(device: torch.device, args: argparse.Namespace) -> None:
    import open_clip

    from clip2scene_core.clip.prompts import TEMPLATES, class_prompts, load_class_vocabulary
    from clip2scene_core.clip.teacher import MaskCLIPTeacher
    from clip2scene_core.clip.text_encoders import OpenClipTextEncoder

    model = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval()
    teacher = MaskCLIPTeacher("ViT-B-16", "none", device=device, model=model)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 416, 3), dtype=np.uint8)
    single, dense = timed(lambda: teacher.dense_features(images[:1]), device, args.images)
    batched, _ = timed(lambda: teacher.dense_features(images), device, max(1, args.images // args.batch))
    print(f"[{device}] MaskCLIP dense features, 224x416 -> {tuple(dense.shape[1:])}: "
          f"{single * 1e3:.0f} ms/image (batch 1), "
          f"{batched / args.batch * 1e3:.0f} ms/image (batch {args.batch})")

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    longest = OpenClipTextEncoder("ViT-B-16", "none", device, model=model, tokenizer=tokenizer)
    full = OpenClipTextEncoder("ViT-B-16", "none", device, pad_to_longest=False, model=model,
                               tokenizer=tokenizer)
    classes = load_class_vocabulary("nuscenes")[:args.classes]
    prompts = [class_prompts([c.display_name], TEMPLATES) for c in classes]  # 85 prompts per class
    longest.encode(["a warm-up prompt."])
    full.encode(["a warm-up prompt."])
    # One timed run each: a 77-token pass over 85 prompts takes tens of seconds on 2 CPU cores.
    t_longest, by_longest = timed(lambda: [longest.encode(p) for p in prompts], device, 1, warm_up=False)
    t_full, by_full = timed(lambda: [full.encode(p) for p in prompts], device, 1, warm_up=False)
    difference = max(float((a - b).abs().max()) for a, b in zip(by_longest, by_full))
    print(f"[{device}] text, {len(TEMPLATES)} templates per class ({len(classes)} classes): "
          f"padded to longest {t_longest / len(classes) * 1e3:.0f} ms/class, padded to 77 "
          f"{t_full / len(classes) * 1e3:.0f} ms/class, speed-up x{t_full / t_longest:.1f}, "
          f"max |difference| {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1, help="classes to time text encoding on")
    parser.add_argument("--images", type=int, default=2, help="timed dense-feature runs")
    parser.add_argument("--batch", type=int, default=4, help="images per batch for the batched timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        with torch.no_grad():
            bench_device(device, args)


if __name__ == "__main__":
    main()
