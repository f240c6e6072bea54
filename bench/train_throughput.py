"""Pretraining throughput: frames/s and peak memory of a training step of the default network.

One step = network forward on every sweep (K = 3 per frame), Eq. 1 + Eq. 2-4 losses, backward and an
SGD update, on full-resolution synthetic frames (32-beam LiDAR, three 224x416 cameras) with the
simulated teacher. Batch preparation (sweep registration, projection, teacher features) is timed on
its own: it runs in DataLoader workers during training. Prints one row per device (CPU; CUDA fp32 and
fp16 autocast side by side when a GPU is present).

    .venv/bin/python bench/train_throughput.py [--batch-size 2] [--steps 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from clip2scene_core.data.synthetic import SyntheticDataset
from clip2scene_core.inputs import sparse_input
from clip2scene_core.model import build_model
from clip2scene_core.train.batching import PretrainBatch, PretrainCollator, batch_to
from clip2scene_core.train.config import merge_config
from clip2scene_core.train.pairs import PairingOptions, SimulatedTeacher
from clip2scene_core.train.pretrain import DEFAULT_PRETRAIN_CONFIG, model_config_for, optimizer_step, pretraining_losses
from clip2scene_core.train.schedule import build_optimizer, build_scheduler


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2, help="frames per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per device (after one warm-up)")
    parser.add_argument("--sweeps", type=int, default=3, help="K sweeps per frame")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--preset", default="default", choices=("default", "tiny"), help="network")
    return parser.parse_args()


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_steps(batch: PretrainBatch, text: torch.Tensor, config: dict, device: torch.device, steps: int) -> dict:
    """Best seconds per step over ``steps`` timed steps, voxel count and peak memory on ``device``."""
    torch.manual_seed(0)
    model = build_model(model_config_for(config, text.shape[1])).to(device).train()
    optimizer = build_optimizer(model.parameters(), config["optimizer"])
    scheduler = build_scheduler(optimizer, steps + 1)
    scaler = torch.amp.GradScaler("cuda", enabled=config["amp"] and device.type == "cuda")
    batch, text = batch_to(batch, device), text.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for step in range(steps + 1):  # the first step warms up (kernel maps, allocator, cuDNN)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        losses = pretraining_losses(model, batch, text, config, 0, 10, torch.Generator())
        optimizer_step(losses["total"], optimizer, scheduler, scaler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            best = min(best, time.perf_counter() - start)
    voxels = len(sparse_input(batch.points, batch.features, config["voxel_size"], batch.sample)[0].coords)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_gib()
    return {"seconds": best, "voxels": voxels, "memory_gib": memory}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = merge_config(DEFAULT_PRETRAIN_CONFIG, {"model_preset": args.preset, "pairs": {"num_sweeps": args.sweeps}})
    world = SyntheticDataset(seed=0, num_scenes=1, frames_per_scene=args.batch_size)
    frames = [world[i] for i in range(args.batch_size)]
    text_dim = model_config_for(config, 1)["text_dim"] if args.preset == "default" else 384
    text = torch.nn.functional.normalize(torch.randn(len(frames[0].class_names), text_dim,
                                                     generator=torch.Generator().manual_seed(0)), dim=1)
    collate = PretrainCollator(SimulatedTeacher(text, 0.2), PairingOptions(num_sweeps=args.sweeps), ("intensity",),
                               config["pairs"]["cell_size"])
    start = time.perf_counter()
    batch = collate(frames, list(range(len(frames))), torch.Generator().manual_seed(0))
    prepare = time.perf_counter() - start
    print(f"{args.preset} network, batch {args.batch_size} frames x {args.sweeps} sweeps: {len(batch.points)} points, "
          f"{len(batch.pair_point)} point-pixel pairs; batch preparation {prepare:.2f} s "
          f"({args.batch_size / prepare:.2f} frames/s, one worker)")
    runs = [("cpu fp32", torch.device("cpu"), False)]
    if torch.cuda.is_available():
        runs += [("cuda fp32", torch.device("cuda"), False), ("cuda fp16 autocast", torch.device("cuda"), True)]
    print(f"{'device':<20} {'voxels':>8} {'step s':>8} {'frames/s':>9} {'peak memory':>12}")
    results = {}
    for name, device, amp in runs:
        result = time_steps(batch, text, {**config, "amp": amp}, device, args.steps)
        results[name] = result
        kind = "GiB alloc" if device.type == "cuda" else "GiB RSS"
        print(f"{name:<20} {result['voxels']:>8} {result['seconds']:>8.3f} {args.batch_size / result['seconds']:>9.2f} "
              f"{result['memory_gib']:>8.2f} {kind}", flush=True)
    if "cuda fp16 autocast" in results:
        ratio = results["cuda fp32"]["seconds"] / results["cuda fp16 autocast"]["seconds"]
        print(f"fp16 autocast speed-up over fp32 on CUDA: {ratio:.2f}x; "
              f"CUDA fp16 over CPU: {results['cpu fp32']['seconds'] / results['cuda fp16 autocast']['seconds']:.1f}x")


if __name__ == "__main__":
    main()
