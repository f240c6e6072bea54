"""Pretraining throughput of the full objective on the ablation preset: this tree against an earlier commit.

Every run trains with ``pretrain()`` on the ablation bench's world and network (``bench/ablation.py``:
LiDAR with 360 azimuth steps, 3 sweeps per frame, Eq. 1 + Eq. 2-4 + S3 active from the first step,
batch 1, in-memory split) for ``--warmup + --steps`` steps in a fresh subprocess, and times the steps
from the optimiser's calls (warm-up excluded), so data preparation, pairing, kernel maps, losses and
the update all count. The earlier commit (``--baseline``, default ``HEAD``) runs from a temporary
``git worktree`` on the same dataset, the same threads and the same config; runs alternate between the
two trees so machine noise hits both alike. Then prints where this tree's step time goes.

    .venv/bin/python bench/train_throughput.py --baseline ec22886   # ~3 min on 2 cores
    .venv/bin/python bench/train_throughput.py --baseline ec22886 --threads 1 --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with ('none' to skip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1],
                        help="DataLoader workers of this tree's runs (the baseline runs with 0, its default)")
    parser.add_argument("--ddp", type=int, default=2, metavar="N",
                        help="also time this tree as N data-parallel processes of 1 thread (torchrun, gloo; "
                             "frames/s counts every process's frames; 1 = skip)")
    parser.add_argument("--steps", type=int, default=24, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--out", default="runs/bench_throughput", help="work folder (dataset, text, runs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one timing job (JSON spec)
    return parser.parse_args()


def run_config(dataset: Path, text_file: Path, out_dir: Path, threads: int, workers: int, steps: int) -> dict:
    """The pretraining config of one timed run (keys both trees understand)."""
    from ablation import NETWORK

    return {
        "seed": 0, "device": "cpu", "threads": threads, "workers": workers, "out_dir": str(out_dir),
        "data": {"kind": "synthetic", "root": str(dataset), "in_memory": True,
                 "train": {"frames": "0:24"}, "val": {"frames": "24:"}},
        "text": {"embeddings_file": str(text_file)},
        "model_preset": "tiny", "model": NETWORK, "voxel_size": 0.1, "batch_size": 1, "epochs": 4,
        "optimizer": {"lr": 0.03}, "s3": {"start_epoch": 0}, "checkpoint_every": 10**6,
        "max_steps": steps, "eval": {"enabled": False},
    }


def worker(spec: dict) -> None:
    """Train for spec["config"]["max_steps"] steps and print the time after every optimiser step."""
    import logging

    import clip2scene_core.train.pretrain as pretrain_module

    logging.disable(logging.WARNING)
    stamps: list[float] = []
    step = pretrain_module.optimizer_step

    def timed_step(*args, **kwargs):
        step(*args, **kwargs)
        stamps.append(time.perf_counter())

    pretrain_module.optimizer_step = timed_step
    os.environ["TQDM_DISABLE"] = "1"
    pretrain_module.pretrain(spec["config"])
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"module": pretrain_module.__file__, "stamps": stamps}))


def timed_run(tree: Path, config: dict, warmup: int, processes: int = 1) -> float:
    """Frames per second of one run of ``tree``'s code (batch 1: one frame per step and process)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(config["threads"])}
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run([*launcher, str(Path(__file__).resolve()), "--worker", json.dumps({"config": config})],
                          env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"timing run in {tree} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(tree)):
        raise RuntimeError(f"run meant for {tree} imported {result['module']}")
    stamps = result["stamps"][warmup - 1:]
    return processes * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def step_breakdown(dataset: Path, text_file: Path, threads: int, steps: int) -> dict[str, float]:
    """Seconds per step of this tree, by stage, on the same frames and config as the timed runs.

    data: batch assembly from the prepared frames (teacher noise, augmentation, cells); kernel maps:
    voxelisation and every kernel map; network forward / backward: the backbone alone (maps cached;
    backward of a random output gradient); step: one whole training step without data.
    """
    import torch

    from clip2scene_core.inputs import sparse_input
    from clip2scene_core.model import build_model
    from clip2scene_core.train.batching import PretrainCollator, step_generator
    from clip2scene_core.train.config import merge_config
    from clip2scene_core.train.pairs import PairingOptions, SimulatedTeacher
    from clip2scene_core.train.pretrain import (
        DEFAULT_PRETRAIN_CONFIG, augment_options, model_config_for, optimizer_step, pretraining_losses,
    )
    from clip2scene_core.train.schedule import build_optimizer, build_scheduler
    from clip2scene_core.train.splits import open_split

    torch.set_num_threads(threads)
    config = merge_config(DEFAULT_PRETRAIN_CONFIG, run_config(dataset, text_file, Path("unused"), threads, 0, steps))
    frames = open_split(config["data"], "train").frames[:steps]
    text = torch.load(text_file, weights_only=True)["embeddings"]
    sigma = open_split(config["data"], "train").dataset.config.teacher.feature_noise_sigma
    collate = PretrainCollator(SimulatedTeacher(text, sigma), PairingOptions(num_sweeps=3), ("intensity",),
                               0.1, augment_options(config["augment"]))
    prepared = [collate.prepare(frame) for frame in frames]
    torch.manual_seed(0)
    model = build_model(model_config_for(config, text.shape[1])).train()
    optimizer = build_optimizer(model.parameters(), config["optimizer"])
    scheduler = build_scheduler(optimizer, 10 * steps)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    times: dict[str, list[float]] = {"data": [], "kernel maps": [], "network forward": [],
                                     "network backward": [], "step": []}
    for index, frame in enumerate(prepared):
        start = time.perf_counter()
        batch = collate([frame], [index], step_generator(0, 0, index))
        times["data"].append(time.perf_counter() - start)
        sparse, _ = sparse_input(batch.points, batch.features, config["voxel_size"], batch.sample)
        with torch.no_grad():
            fresh = []
            for _ in range(2):  # the first pass builds and caches every kernel map
                start = time.perf_counter()
                model.backbone(sparse)
                fresh.append(time.perf_counter() - start)
        times["kernel maps"].append(max(fresh[0] - fresh[1], 0.0))
        start = time.perf_counter()
        features = model.backbone(sparse).feats
        times["network forward"].append(time.perf_counter() - start)
        gradient = torch.randn_like(features)
        start = time.perf_counter()
        features.backward(gradient)
        times["network backward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        losses = pretraining_losses(model, batch, text, config, 1, 0, torch.Generator().manual_seed(index))
        optimizer_step(losses["total"], optimizer, scheduler, scaler)
        times["step"].append(time.perf_counter() - start)
    return {name: median(values[1:] or values) for name, values in times.items()}  # first: warm-up


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from ablation import prepare_dataset, prepare_text

    out = Path(args.out).resolve()
    dataset = prepare_dataset(out / "data", 8, 4)
    text_file = prepare_text(out / "synthetic_text_minilm.pt")
    steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this tree": ROOT}
        if args.baseline != "none":
            revision = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.strip()
            subprocess.run(["git", "worktree", "add", "--detach", f"{scratch}/baseline", revision], cwd=ROOT,
                           check=True, capture_output=True)
            trees = {f"baseline {revision}": Path(scratch) / "baseline", **trees}
        try:
            print(f"full objective, ablation preset (24 in-memory frames, 3 sweeps, batch 1), "
                  f"{args.steps} timed steps after {args.warmup} warm-up steps; frames/s:", flush=True)
            print(f"{'code':<22} {'threads':>7} {'workers':>7} {'frames/s':>9} {'speed-up':>9}")
            for threads in args.threads:
                reference = None
                for name, tree in trees.items():
                    for workers in ([0] if name.startswith("baseline") else args.workers):
                        config = run_config(dataset, text_file, Path(scratch) / "run", threads, workers, steps)
                        rate = timed_run(tree, config, args.warmup)
                        reference = reference or rate
                        print(f"{name:<22} {threads:>7} {workers:>7} {rate:>9.2f} {rate / reference:>8.2f}x",
                              flush=True)
                if threads == 1 and args.ddp > 1:
                    config = run_config(dataset, text_file, Path(scratch) / "run", 1, 0, steps)
                    rate = timed_run(ROOT, config, args.warmup, args.ddp)
                    print(f"{f'this tree, {args.ddp} x DDP':<22} {1:>7} {0:>7} {rate:>9.2f} {rate / reference:>8.2f}x"
                          f"   ({args.ddp} processes x batch 1: effective batch {args.ddp})", flush=True)
        finally:
            if args.baseline != "none":
                subprocess.run(["git", "worktree", "remove", "--force", f"{scratch}/baseline"], cwd=ROOT,
                               check=False, capture_output=True)
    for threads in args.threads:
        parts = step_breakdown(dataset, text_file, threads, min(args.steps, 16))
        total = parts["data"] + parts["step"]
        network = parts["network forward"] + parts["network backward"]
        print(f"\nthis tree, {threads} thread(s): {total:.3f} s per frame = data {parts['data']:.3f} + "
              f"step {parts['step']:.3f} (inline, no workers)")
        for name in ("data", "kernel maps", "network forward", "network backward"):
            print(f"  {name:<17} {parts[name]:.3f} s  {100 * parts[name] / total:5.1f} %")
        print(f"  network forward+backward {100 * network / total:.0f} % of the frame's time; everything else "
              f"(data, kernel maps, heads, losses, update) {100 * (1 - network / total):.0f} %")


if __name__ == "__main__":
    main()
