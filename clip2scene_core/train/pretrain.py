"""Annotation-free pretraining of the 3D network from a CLIP teacher (CLIP2Scene, CVPR 2023, section 3).

The loop, per step (``pretrain`` below reads in this order):

1. take B keyframes; stitch each one's K sweeps into the keyframe frame and project them into the
   keyframe's cameras -> (pixel x, point p) pairs; the teacher gives x (``train/pairs.py``);
2. run the network on every sweep as its own sample (as at inference) -> two heads per point;
3. pseudo-label each pair ``y = argmax_c D(x, t_c)``; with S3 (from ``s3.start_epoch``) the step's
   targets are, by a coin flip, either those or the points' own predictions;
4. ``L = L_S (Eq. 1, semantic head) + L_SSR (Eq. 2-4, consistency head, 0.1 m cells of the stitched
   cloud)`` (``train/losses.py``); SGD step, cosine schedule.

Every knob is in :data:`DEFAULT_PRETRAIN_CONFIG` (YAML: ``config/pretrain.yaml``). Data order,
augmentation, teacher noise and the S3 coin depend only on ``(seed, epoch, step)``, so ``resume``
continues an interrupted run exactly. Under ``torchrun`` it trains with DistributedDataParallel.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, TextIO

import torch
from torch import Tensor, nn
from tqdm import tqdm

from clip2scene_core.inputs import feature_width, sparse_input
from clip2scene_core.model import DEFAULT_MODEL_CONFIG, TINY_MODEL_CONFIG, build_model
from clip2scene_core.train.batching import (
    S3_STREAM, AugmentOptions, EpochBatches, PretrainBatch, PretrainCollator, batch_loader, batch_to,
    epoch_batches, step_generator,
)
from clip2scene_core.checkpoint import load_training_state, save_checkpoint, save_training_state
from clip2scene_core.train.config import merge_config
from clip2scene_core.train.distributed import (
    DistributedContext, barrier, init_distributed, replicas_in_sync, shutdown_distributed, wrap_model,
)
from clip2scene_core.train.evaluation import evaluate_model
from clip2scene_core.train.losses import (
    S3_POINT_LABELS, LossConfig, aligned_point_labels, pretraining_loss, pseudo_labels,
    switchable_self_training_targets,
)
from clip2scene_core.train.pairs import MaskCLIPPixelTeacher, PairingOptions, PixelTeacher, SimulatedTeacher
from clip2scene_core.train.schedule import (
    DEFAULT_OPTIMIZER_CONFIG, DEFAULT_SCHEDULE_CONFIG, build_optimizer, build_scheduler,
)
from clip2scene_core.train.splits import DEFAULT_DATA_CONFIG, Split, open_split
from clip2scene_core.train.text_space import (
    DEFAULT_TEXT_CONFIG, class_text_embeddings, class_vocabulary, text_encoder_spec,
)

logger = logging.getLogger(__name__)

MODEL_PRESETS = {"default": DEFAULT_MODEL_CONFIG, "tiny": TINY_MODEL_CONFIG}
STATE_FILE = "last.pt"  # resumable training state, rewritten every checkpoint_every steps
MODEL_FILE = "model.pt"  # final self-describing checkpoint
HISTORY_FILE = "history.jsonl"  # one JSON line of losses per step
CURVE_FILE = "val_curve.jsonl"  # one JSON line of val metrics per eval.every_epochs epochs

DEFAULT_PRETRAIN_CONFIG: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs/pretrain",
    "device": "auto",  # auto | cpu | cuda
    "threads": None,  # torch CPU threads per process (None = torch's default)
    "data": DEFAULT_DATA_CONFIG,  # train/splits.py
    "text": DEFAULT_TEXT_CONFIG,  # train/text_space.py
    "teacher": {
        "kind": "simulated",  # simulated (synthetic world) | maskclip
        "sigma": None,  # simulated feature noise; None = the world's TeacherConfig value
        "model_name": "ViT-B-16",
        "pretrained": "openai",  # open_clip tag in the local cache, or a checkpoint file
        "input_size": [224, 416],  # (H, W) the ViT sees
        "feature_cache": "~/.cache/clip2scene/maskclip",
    },
    "pairs": {
        "num_sweeps": 3,  # K, counting the keyframe
        "max_sweep_seconds": 1.0,  # S
        "min_depth": 1.0,
        "occlusion": True,
        "occlusion_tolerance": 0.5,
        "occlusion_block": 4,
        "max_pairs_per_frame": None,
        "cell_size": 0.1,  # grid cells g_n of Eq. 2-4, metres
    },
    "input_features": ["intensity"],
    "voxel_size": 0.1,
    "model_preset": "default",  # default | tiny
    "model": {},  # overrides of the preset (widths, blocks_per_stage, backend)
    "augment": {"enabled": True, "rotate": True, "flip": True, "scale": [0.95, 1.05]},
    "loss": dataclasses.asdict(LossConfig()),  # train/losses.py: Eq. 1-4 options and weights
    # start_epoch None = epochs // 2; point_labels: the points' own targets, "argmax" (the paper) or
    # "aligned" (the argmax after aligning the class distribution with the teacher's, losses.py;
    # measured better at short and converged budgets, README "Does the student beat its teacher?")
    "s3": {"enabled": True, "start_epoch": None, "probability": 0.5, "point_labels": "aligned"},
    "optimizer": dict(DEFAULT_OPTIMIZER_CONFIG),
    "schedule": dict(DEFAULT_SCHEDULE_CONFIG),
    "epochs": 20,
    "batch_size": 2,  # frames per process and step
    "workers": 0,  # DataLoader worker processes
    "amp": True,  # fp16 autocast + GradScaler on CUDA
    "checkpoint_every": 100,  # steps
    "max_steps": None,  # stop (with a resumable state) after this many steps in total
    "resume": None,  # None | "auto" (out_dir/last.pt if present) | a training-state file
    # Annotation-free mIoU on the val split at the end, and every ``every_epochs`` epochs (None = only
    # at the end) into val_curve.jsonl: the learning curve, to see whether training has plateaued.
    "eval": {"enabled": True, "head": "semantic", "every_epochs": None},
}


def recorded_pretrain_config(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The pretraining config a checkpoint records, in today's keys.

    Checkpoints written before the KL row became ``loss.semantic_loss: kl`` record a top-level
    ``kl_distillation`` flag instead; the two describe the same training. Those written before
    ``s3.point_labels`` existed trained S3 on the points' plain argmax.
    """
    config = copy.deepcopy(dict(checkpoint["extra"]["config"]))
    if config.pop("kl_distillation", False):
        config["loss"] = {**config["loss"], "semantic_loss": "kl"}
    config["s3"] = {"point_labels": "argmax", **config["s3"]}
    return config


# -- teacher ---------------------------------------------------------------------------------------
def build_pixel_teacher(teacher_config: Mapping[str, Any], text: Tensor, split: Split,
                        context: DistributedContext) -> PixelTeacher:
    """The configured pixel teacher; MaskCLIP features are precomputed into the cache by rank 0."""
    kind = teacher_config["kind"]
    if kind == "simulated":
        sigma = teacher_config["sigma"]
        if sigma is None:
            world = getattr(split.dataset, "config", None)
            if world is None:
                raise ValueError("teacher.sigma is needed: the dataset has no synthetic-world config")
            sigma = world.teacher.feature_noise_sigma
        return SimulatedTeacher(text, sigma)
    if kind != "maskclip":
        raise ValueError(f"teacher.kind must be 'simulated' or 'maskclip', got {kind!r}")
    from clip2scene_core.clip.feature_cache import DenseFeatureCache
    from clip2scene_core.clip.teacher import MaskCLIPTeacher

    live = MaskCLIPTeacher(teacher_config["model_name"], teacher_config["pretrained"], context.device,
                           input_size=teacher_config["input_size"])
    if live.dim != text.shape[1]:
        raise ValueError(f"MaskCLIP {teacher_config['model_name']} features are {live.dim}-d but the text "
                         f"embeddings are {text.shape[1]}-d: use text.encoder=open_clip (the teacher's text tower)")
    cache = DenseFeatureCache(teacher_config["feature_cache"], live.spec)
    if context.is_main:
        MaskCLIPPixelTeacher(cache, live.dim, live).prepare(split.frames, range(len(split.frames)))
    barrier(context)
    return MaskCLIPPixelTeacher(cache, live.dim)  # workers read the cache only


# -- one step --------------------------------------------------------------------------------------
def pretraining_losses(model: nn.Module, batch: PretrainBatch, text: Tensor, config: Mapping[str, Any],
                       epoch: int, s3_start_epoch: int, s3_generator: torch.Generator) -> dict[str, Tensor]:
    """Forward the batch and compute ``L = L_S + L_SSR`` (with S3 targets when enabled).

    Returns:
        dict of scalar tensors ``total``, ``semantic``, ``spatial_temporal``, and ``pseudo_labels`` (M,).
    """
    loss_config = LossConfig.from_dict(config["loss"])
    sparse, inverse = sparse_input(batch.points, batch.features, config["voxel_size"], batch.sample)
    with torch.autocast("cuda", dtype=torch.float16, enabled=config["amp"] and batch.points.is_cuda):
        heads = model(sparse, rows=inverse[batch.pair_point])
    semantic, consistency = heads["semantic"], heads["consistency"]
    pixel = batch.pixel_features
    targets = None
    if config["s3"]["enabled"] and epoch >= s3_start_epoch:  # before it, the targets are the pixels' labels
        pixel_labels = pseudo_labels(pixel, text)
        targets = switchable_self_training_targets(
            pixel_labels, s3_point_labels(semantic, text, pixel_labels, config), epoch, s3_start_epoch,
            s3_generator, config["s3"]["probability"])
    return pretraining_loss(pixel, semantic, consistency, text, batch.cell_ids, targets, loss_config)


def s3_point_label_kind(config: Mapping[str, Any]) -> str:
    """The config's ``s3.point_labels``, checked: ``argmax`` or ``aligned``."""
    kind = config["s3"]["point_labels"]
    if kind not in S3_POINT_LABELS:
        raise ValueError(f"s3.point_labels must be one of {S3_POINT_LABELS}, got {kind!r}")
    return kind


def s3_point_labels(semantic: Tensor, text: Tensor, pixel_labels: Tensor, config: Mapping[str, Any]) -> Tensor:
    """The points' own S3 targets as ``s3.point_labels`` asks: ``argmax`` or ``aligned``."""
    if s3_point_label_kind(config) == "aligned":
        return aligned_point_labels(semantic.detach(), text, pixel_labels, config["loss"]["temperature"])
    return pseudo_labels(semantic.detach(), text)


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler) -> None:
    """Backpropagate ``loss`` (fp16-scaled when the scaler is enabled), step the optimiser and schedule."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


# -- the run ---------------------------------------------------------------------------------------
def model_config_for(config: Mapping[str, Any], text_dim: int) -> dict[str, Any]:
    """The network config: the preset, its overrides, input channels and the text dimension."""
    preset = config["model_preset"]
    if preset not in MODEL_PRESETS:
        raise ValueError(f"model_preset must be one of {sorted(MODEL_PRESETS)}, got {preset!r}")
    return {**copy.deepcopy(MODEL_PRESETS[preset]), **copy.deepcopy(config["model"]),
            "in_channels": feature_width(config["input_features"]), "text_dim": int(text_dim)}


def open_history(path: Path, step: int) -> TextIO:
    """The per-step loss log, opened for appending after its first ``step`` records (a resumed run
    drops what the interrupted one logged after its last checkpoint; a fresh run starts it empty)."""
    kept = []
    if step and path.is_file():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                if json.loads(line)["step"] <= step]
    handle = open(path, "w", encoding="utf-8")
    handle.writelines(kept)
    return handle


def resume_path(config: Mapping[str, Any]) -> Optional[Path]:
    """The training state to resume from: None, ``out_dir/last.pt`` for "auto" (if present), or a file."""
    resume = config["resume"]
    if resume is None:
        return None
    path = Path(config["out_dir"]) / STATE_FILE if resume == "auto" else Path(resume)
    if resume == "auto" and not path.is_file():
        logger.info("resume=auto: no %s yet, starting fresh", path)
        return None
    if not path.is_file():
        raise FileNotFoundError(f"training state to resume not found: {path}")
    return path


def pretrain(config: Optional[Mapping[str, Any]] = None) -> Path:
    """Pretrain a 3D network from the teacher; returns the path of the written checkpoint.

    Args:
        config: overrides of :data:`DEFAULT_PRETRAIN_CONFIG` (nested dicts; unknown keys raise).
    Returns:
        ``out_dir/model.pt`` (self-describing checkpoint with the annotation-free val metrics), or
        ``out_dir/last.pt`` (resumable state) when ``max_steps`` stopped the run early.
    """
    cfg = merge_config(DEFAULT_PRETRAIN_CONFIG, config)
    s3_point_label_kind(cfg)  # S3 starts halfway: a wrong value must fail now, not after hours of training
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    context = init_distributed(cfg["device"])
    try:
        return _pretrain(cfg, context)
    finally:
        shutdown_distributed(context)


def _pretrain(cfg: dict[str, Any], context: DistributedContext) -> Path:
    seed, out_dir, device = int(cfg["seed"]), Path(cfg["out_dir"]), context.device
    out_dir.mkdir(parents=True, exist_ok=True)

    # Data, text space t_c, teacher.
    train = open_split(cfg["data"], "train")
    classes = class_vocabulary(cfg["text"], cfg["data"]["kind"], train.class_names)
    spec = None if cfg["text"]["embeddings_file"] else text_encoder_spec(
        cfg["text"], cfg["teacher"]["model_name"], cfg["teacher"]["pretrained"])
    text, text_spec = class_text_embeddings(cfg["text"], classes, spec)
    teacher = build_pixel_teacher(cfg["teacher"], text, train, context)
    pairs_cfg = cfg["pairs"]
    collate = PretrainCollator(
        teacher=teacher,
        pairing=PairingOptions(**{f.name: pairs_cfg[f.name] for f in dataclasses.fields(PairingOptions)}),
        input_features=tuple(cfg["input_features"]), cell_size=pairs_cfg["cell_size"],
        augment=augment_options(cfg["augment"]), max_pairs_per_frame=pairs_cfg["max_pairs_per_frame"])
    text = text.to(device)
    # An in-memory split also keeps what pairing computes (deterministic) instead of redoing it per epoch.
    train_frames = train.frames
    if cfg["data"]["in_memory"]:
        train_frames = [collate.prepare(frame) for frame in tqdm(
            train.frames, desc="pair points with pixels", unit="frame", disable=not context.is_main)]
    val_frames = open_split(cfg["data"], "val").frames if cfg["eval"]["enabled"] and context.is_main else None

    def evaluate() -> dict[str, Any]:
        result = evaluate_model(model, val_frames, text, cfg["input_features"], cfg["voxel_size"],
                                cfg["eval"]["head"], progress=False)
        return result.metrics(checkpoint_fields["train_classes"])

    # Network, optimiser, schedule.
    torch.manual_seed(seed)
    model_config = model_config_for(cfg, text.shape[1])
    model = build_model(model_config).to(device)
    optimizer = build_optimizer(model.parameters(), cfg["optimizer"])
    epochs = int(cfg["epochs"])
    num_frames = len(train.frames)
    steps_per_epoch = len(epoch_batches(num_frames, cfg["batch_size"], seed, 0, context.rank, context.world_size))
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, cfg["schedule"])
    scaler = torch.amp.GradScaler("cuda", enabled=cfg["amp"] and device.type == "cuda")
    s3_start = epochs // 2 if cfg["s3"]["start_epoch"] is None else int(cfg["s3"]["start_epoch"])
    checkpoint_fields = dict(model_config=model_config, text_encoder=text_spec, voxel_size=cfg["voxel_size"],
                             input_features=list(cfg["input_features"]), train_classes=[c.name for c in classes])
    extra = {"stage": "pretrain", "class_embeddings": text.cpu(), "config": cfg}

    step = 0
    state_path = resume_path(cfg)
    if state_path is not None:
        state = load_training_state(state_path, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                    map_location=device)
        model.load_state_dict(state["state_dict"])
        step = int(state["training_state"]["step"])
        logger.info("resuming at step %d of %d", step, epochs * steps_per_epoch)
    trained = wrap_model(model, context)

    def save_state(path: Path, metrics: Mapping[str, Any]) -> Path:
        return save_training_state(path, state_dict=model.state_dict(), metrics=metrics, optimizer=optimizer,
                                   scheduler=scheduler, scaler=scaler, epoch=step // steps_per_epoch,
                                   step=step, extra=extra, **checkpoint_fields)

    history = open_history(out_dir / HISTORY_FILE, step) if context.is_main else None
    every = cfg["eval"]["every_epochs"]
    curve = open_history(out_dir / CURVE_FILE, step) if val_frames is not None and every else None
    try:
        # The loop: one optimiser step per batch of B keyframes (x K sweeps).
        trained.train()
        for epoch in range(step // steps_per_epoch, epochs):
            plan = epoch_batches(num_frames, cfg["batch_size"], seed, epoch, context.rank, context.world_size)
            batches = EpochBatches(train_frames, plan, collate, seed, epoch, context.rank,
                                   first_step=step % steps_per_epoch)
            progress = tqdm(batch_loader(batches, cfg["workers"]), total=len(batches), unit="step",
                            desc=f"pretrain {epoch + 1}/{epochs}", disable=not context.is_main)
            for batch in progress:
                batch = batch_to(batch, device)
                s3_generator = step_generator(seed, epoch, step % steps_per_epoch, stream=S3_STREAM)
                losses = pretraining_losses(trained, batch, text, cfg, epoch, s3_start, s3_generator)
                optimizer_step(losses["total"], optimizer, scheduler, scaler)
                step += 1
                record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                          "pairs": int(batch.pair_point.numel()),
                          **{k: losses[k].item() for k in ("total", "semantic", "spatial_temporal")}}
                progress.set_postfix(loss=f"{record['total']:.3f}", L_S=f"{record['semantic']:.3f}",
                                     L_SSR=f"{record['spatial_temporal']:.3f}", lr=f"{record['lr']:.3g}")
                if not record["pairs"]:
                    logger.warning("step %d: no point-pixel pairs (frames without cameras?)", step)
                if history is not None:
                    history.write(json.dumps(record) + "\n")
                    history.flush()
                stop = cfg["max_steps"] is not None and step >= int(cfg["max_steps"])
                if context.is_main and (step % int(cfg["checkpoint_every"]) == 0 or stop):
                    save_state(out_dir / STATE_FILE, {"step": step, "loss": record["total"]})
                if stop:
                    logger.info("max_steps=%d reached; resume with resume=auto", step)
                    barrier(context)
                    return out_dir / STATE_FILE
            if curve is not None and (epoch + 1) % int(every) == 0 and epoch + 1 < epochs:
                point = {"step": step, "epoch": epoch + 1, **evaluate()}
                logger.info("epoch %d: val mIoU %.1f %%", epoch + 1, 100 * (point["miou"] or 0.0))
                curve.write(json.dumps(point) + "\n")
                curve.flush()
    finally:
        for log in (history, curve):
            if log is not None:
                log.close()

    # Annotation-free evaluation on the val split, final checkpoint.
    metrics: dict[str, Any] = {"step": step, "world_size": context.world_size,
                               "replicas_in_sync": replicas_in_sync(trained, context)}
    if context.is_main:
        if val_frames is not None:
            final = evaluate()
            metrics.update(final)
            logger.info("annotation-free val mIoU %.1f %%", 100 * (metrics["miou"] or 0.0))
            if every:
                with open(out_dir / CURVE_FILE, "a", encoding="utf-8") as log:
                    log.write(json.dumps({"step": step, "epoch": epochs, **final}) + "\n")
        save_state(out_dir / STATE_FILE, metrics)
        save_checkpoint(out_dir / MODEL_FILE, state_dict=model.state_dict(), metrics=metrics, extra=extra,
                        **checkpoint_fields)
    barrier(context)
    return out_dir / MODEL_FILE


def augment_options(augment_config: Mapping[str, Any]) -> Optional[AugmentOptions]:
    """The ``augment`` config section as `AugmentOptions` (None when disabled)."""
    if not augment_config["enabled"]:
        return None
    return AugmentOptions(bool(augment_config["rotate"]), bool(augment_config["flip"]),
                          tuple(float(s) for s in augment_config["scale"]))
