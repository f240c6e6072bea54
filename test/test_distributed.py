"""Multi-process training under torchrun (DistributedDataParallel, gloo on CPU): replicas stay in sync."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip2scene_core.clip.embedding_file import save_text_embeddings
from clip2scene_core.data.labels import SYNTHETIC_CLASSES
from clip2scene_core.checkpoint import load_checkpoint
from clip2scene_core.train.distributed import DistributedContext, init_distributed, replicas_in_sync

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Two CPU processes on loopback running ``python -m clip2scene_core ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "clip2scene_core", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    embeddings = torch.nn.functional.normalize(torch.randn(10, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    return save_text_embeddings(tmp_path_factory.mktemp("text") / "text.pt", embeddings, list(SYNTHETIC_CLASSES),
                                {"kind": "test", "name": "random-384", "weights": "none"}, ["{}"])


def test_two_gloo_processes_train_in_sync(text_file, tmp_path):
    out = tmp_path / "ddp"
    result = torchrun("pretrain", "--config", str(ROOT / "config" / "pretrain_tiny.yaml"),
                      "--set", f"text.embeddings_file={text_file}", "--out", str(out), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(out / "model.pt")
    # 2 frames split over 2 ranks, batch 1: one step per epoch, 2 epochs, gradients averaged over ranks.
    assert checkpoint["metrics"]["world_size"] == 2 and checkpoint["metrics"]["step"] == 2
    assert checkpoint["metrics"]["replicas_in_sync"] is True


def test_a_single_process_needs_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert context.is_main and not context.distributed
    assert replicas_in_sync(torch.nn.Linear(2, 2), context)
