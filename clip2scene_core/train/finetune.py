"""Label-efficient fine-tuning (CLIP2Scene section 4.3): a pretrained network on a fraction of labelled frames.

The classifier is a cosine classifier whose class vectors start as the class text embeddings, so at
step 0 the fine-tuned model predicts exactly what the annotation-free one does; fine-tuning then
trains the whole network and the class vectors with cross-entropy on the labelled points. A label
fraction ``f`` keeps every ``round(1 / f)``-th training frame (1 % = every 100th frame).

The checkpoint is a ``clip2scene/1`` checkpoint whose ``extra["classifier"]`` holds the learned (C, D)
class vectors (``train/evaluation.py`` uses them in ``finetuned`` mode).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from clip2scene_core.inputs import sparse_input
from clip2scene_core.model import build_model, restore_model
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.train.batching import (
    EpochBatches, LabelledBatch, LabelledCollator, batch_loader, batch_to, epoch_batches,
)
from clip2scene_core.checkpoint import (
    load_checkpoint, load_training_state, save_checkpoint, save_training_state,
)
from clip2scene_core.train.config import merge_config
from clip2scene_core.train.distributed import (
    DistributedContext, barrier, init_distributed, replicas_in_sync, shutdown_distributed, wrap_model,
)
from clip2scene_core.train.evaluation import evaluate_model
from clip2scene_core.train.pretrain import (
    DEFAULT_PRETRAIN_CONFIG, HISTORY_FILE, MODEL_FILE, STATE_FILE, augment_options, model_config_for,
    open_history, optimizer_step, resume_path,
)
from clip2scene_core.train.schedule import (
    DEFAULT_OPTIMIZER_CONFIG, DEFAULT_SCHEDULE_CONFIG, build_optimizer, build_scheduler,
)
from clip2scene_core.train.splits import DEFAULT_DATA_CONFIG, FrameSelection, open_split
from clip2scene_core.train.text_space import (
    DEFAULT_TEXT_CONFIG, class_text_embeddings, class_vocabulary, text_encoder_spec,
)

logger = logging.getLogger(__name__)

DEFAULT_FINETUNE_CONFIG: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs/finetune",
    "device": "auto",
    "threads": None,  # torch CPU threads per process (None = torch's default)
    "checkpoint": None,  # pretrained clip2scene checkpoint; None = random initialisation (baseline)
    "label_fraction": 1.0,  # keep every round(1 / fraction)-th training frame
    "data": DEFAULT_DATA_CONFIG,
    "text": DEFAULT_TEXT_CONFIG,  # only used when the checkpoint cannot supply the class vectors
    "input_features": ["intensity"],  # without a checkpoint (else the checkpoint's)
    "voxel_size": 0.1,  # without a checkpoint
    "model_preset": "default",  # without a checkpoint
    "model": {},
    "temperature": 0.07,  # cosine-classifier logits = cos / temperature
    "augment": DEFAULT_PRETRAIN_CONFIG["augment"],
    "optimizer": {**DEFAULT_OPTIMIZER_CONFIG, "lr": 0.02},
    "schedule": dict(DEFAULT_SCHEDULE_CONFIG),
    "epochs": 20,
    "batch_size": 2,
    "workers": 0,
    "amp": True,
    "checkpoint_every": 100,
    "max_steps": None,
    "resume": None,  # None | "auto" | a training-state file
    "eval": {"enabled": True},  # fine-tuned mIoU on the val split at the end
}


def label_fraction_stride(fraction: float) -> int:
    """Frame stride for a label fraction: 1.0 -> 1, 0.01 -> 100 (every 100th frame)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must lie in (0, 1], got {fraction}")
    return max(1, round(1.0 / fraction))


class CosineClassifierNetwork(nn.Module):
    """The 3D network plus learnable class vectors: voxel logits ``cos(p_v, w_c) / temperature``.

    Args:
        network: the scene network (its ``semantic`` head gives ``p``).
        class_vectors: (C, D) initial class vectors (the class text embeddings).
        temperature: logit temperature.
    """

    def __init__(self, network: nn.Module, class_vectors: Tensor, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.network = network
        self.classifier = nn.Parameter(class_vectors.detach().clone().float())
        self.temperature = float(temperature)

    def forward(self, x: SparseTensor) -> Tensor:
        """(V, C) logits of the voxels of ``x``."""
        embeddings = F.normalize(self.network(x)["semantic"].float(), dim=1)
        return embeddings @ F.normalize(self.classifier, dim=1).T / self.temperature


def finetuning_loss(model: nn.Module, batch: LabelledBatch, voxel_size: float, amp: bool) -> Tensor:
    """Mean cross-entropy over the labelled points of the batch (label 0 ignored)."""
    sparse, inverse = sparse_input(batch.points, batch.features, voxel_size, batch.sample)
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp and batch.points.is_cuda):
        logits = model(sparse)
    return F.cross_entropy(logits.float()[inverse], batch.labels - 1, ignore_index=-1)


def finetune(config: Optional[Mapping[str, Any]] = None) -> Path:
    """Fine-tune on labelled frames; returns ``out_dir/model.pt`` (``out_dir/last.pt`` if ``max_steps`` stopped it).

    Args:
        config: overrides of :data:`DEFAULT_FINETUNE_CONFIG` (nested dicts; unknown keys raise).
    """
    cfg = merge_config(DEFAULT_FINETUNE_CONFIG, config)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    context = init_distributed(cfg["device"])
    try:
        return _finetune(cfg, context)
    finally:
        shutdown_distributed(context)


def _finetune(cfg: dict[str, Any], context: DistributedContext) -> Path:
    seed, out_dir, device = int(cfg["seed"]), Path(cfg["out_dir"]), context.device
    out_dir.mkdir(parents=True, exist_ok=True)

    # Labelled frames: every stride-th frame of the training split.
    train = open_split(cfg["data"], "train")
    stride = label_fraction_stride(float(cfg["label_fraction"]))
    frames = FrameSelection(train.frames, range(0, len(train.frames), stride))
    logger.info("fine-tuning on %d of %d frames (label fraction %g)", len(frames), len(train.frames),
                cfg["label_fraction"])
    classes = class_vocabulary(cfg["text"], cfg["data"]["kind"], train.class_names)

    # Network (pretrained or random) and the classifier initialised from the class text embeddings.
    torch.manual_seed(seed)
    if cfg["checkpoint"]:
        pretrained = load_checkpoint(cfg["checkpoint"])
        model_config, text_spec = pretrained["model_config"], pretrained["text_encoder"]
        voxel_size, input_features = pretrained["voxel_size"], list(pretrained["input_features"])
        stored = (pretrained["train_classes"], pretrained["extra"]["class_embeddings"]) \
            if "class_embeddings" in pretrained["extra"] else None
        text, text_spec = class_text_embeddings(cfg["text"], classes, text_spec, stored)
        network = restore_model(model_config, pretrained["state_dict"])
    else:
        spec = None if cfg["text"]["embeddings_file"] else text_encoder_spec(cfg["text"])
        text, text_spec = class_text_embeddings(cfg["text"], classes, spec)
        model_config = model_config_for(cfg, text.shape[1])
        voxel_size, input_features = float(cfg["voxel_size"]), list(cfg["input_features"])
        network = build_model(model_config)
    model = CosineClassifierNetwork(network, text, cfg["temperature"]).to(device)
    optimizer = build_optimizer(model.parameters(), cfg["optimizer"])
    epochs = int(cfg["epochs"])
    steps_per_epoch = len(epoch_batches(len(frames), cfg["batch_size"], seed, 0, context.rank, context.world_size))
    scheduler = build_scheduler(optimizer, epochs * steps_per_epoch, cfg["schedule"])
    scaler = torch.amp.GradScaler("cuda", enabled=cfg["amp"] and device.type == "cuda")
    collate = LabelledCollator(tuple(input_features), augment_options(cfg["augment"]))
    checkpoint_fields = dict(model_config=model_config, text_encoder=text_spec, voxel_size=voxel_size,
                             input_features=input_features, train_classes=[c.name for c in classes])

    def extra() -> dict[str, Any]:
        return {"stage": "finetune", "classifier": model.classifier.detach().cpu(), "class_embeddings": text,
                "label_fraction": float(cfg["label_fraction"]), "config": cfg}

    def save_state(path: Path, metrics: Mapping[str, Any]) -> Path:
        return save_training_state(path, state_dict=model.network.state_dict(), metrics=metrics,
                                   optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                   epoch=step // steps_per_epoch, step=step, extra=extra(), **checkpoint_fields)

    step = 0
    state_path = resume_path(cfg)
    if state_path is not None:
        state = load_training_state(state_path, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                    map_location=device)
        model.network.load_state_dict(state["state_dict"])
        with torch.no_grad():
            model.classifier.copy_(state["extra"]["classifier"])
        step = int(state["training_state"]["step"])
    trained = wrap_model(model, context)

    history = open_history(out_dir / HISTORY_FILE, step) if context.is_main else None
    try:
        trained.train()
        for epoch in range(step // steps_per_epoch, epochs):
            plan = epoch_batches(len(frames), cfg["batch_size"], seed, epoch, context.rank, context.world_size)
            batches = EpochBatches(frames, plan, collate, seed, epoch, context.rank, first_step=step % steps_per_epoch)
            progress = tqdm(batch_loader(batches, cfg["workers"]), total=len(batches), unit="step",
                            desc=f"finetune {epoch + 1}/{epochs}", disable=not context.is_main)
            for batch in progress:
                loss = finetuning_loss(trained, batch_to(batch, device), voxel_size, cfg["amp"])
                optimizer_step(loss, optimizer, scheduler, scaler)
                step += 1
                record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "loss": loss.item()}
                progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.3g}")
                if history is not None:
                    history.write(json.dumps(record) + "\n")
                    history.flush()
                stop = cfg["max_steps"] is not None and step >= int(cfg["max_steps"])
                if context.is_main and (step % int(cfg["checkpoint_every"]) == 0 or stop):
                    save_state(out_dir / STATE_FILE, {"step": step, "loss": record["loss"]})
                if stop:
                    barrier(context)
                    return out_dir / STATE_FILE
    finally:
        if history is not None:
            history.close()

    metrics: dict[str, Any] = {"step": step, "label_fraction": float(cfg["label_fraction"]),
                               "labelled_frames": len(frames), "world_size": context.world_size,
                               "replicas_in_sync": replicas_in_sync(trained, context)}
    if context.is_main:
        if cfg["eval"]["enabled"]:
            result = evaluate_model(model.network, open_split(cfg["data"], "val").frames, model.classifier.detach(),
                                    input_features, voxel_size)
            metrics.update(result.metrics(checkpoint_fields["train_classes"]))
            logger.info("fine-tuned val mIoU %.1f %%", 100 * (metrics["miou"] or 0.0))
        save_state(out_dir / STATE_FILE, metrics)
        save_checkpoint(out_dir / MODEL_FILE, state_dict=model.network.state_dict(), metrics=metrics,
                        extra=extra(), **checkpoint_fields)
    barrier(context)
    return out_dir / MODEL_FILE
