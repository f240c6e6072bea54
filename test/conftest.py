"""Shared fixtures: real-data fixture paths and a safe ROS 2 environment."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ros_harness import ROOT, ros_environment, session_domain_id

REAL_DATA = ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` beside the checkout (skips when a checkout has no shared folder)."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real-data fixtures not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory) -> dict[str, str]:
    """Configure this test process and its children for ROS 2 on loopback only.

    Returns the variables that were set; ``rclpy`` is imported lazily by the tests that need it.
    """
    pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed in this environment")
    log_dir = tmp_path_factory.mktemp("ros_logs")
    env = ros_environment(log_dir, session_domain_id())
    os.environ.update(env)
    return env


@pytest.fixture
def rclpy_context(ros_env):
    """An initialised rclpy Context for one test, shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@pytest.fixture
def ros2_launch():
    """The ROS 2 ``launch`` module, with the process's logging given back afterwards.

    Importing launch makes every logger created later a ``LaunchLogger`` that does not propagate, so
    the log records of later tests (e.g. the CLI's error lines) would never reach ``caplog``.
    """
    logger_class = logging.getLoggerClass()
    # launch_ros, not launch: the repository's launch/ folder would import as a namespace package.
    pytest.importorskip("launch_ros", reason="ROS 2 launch is not installable here")
    import launch
    import launch.logging

    yield launch
    logging.setLoggerClass(logger_class)
    for logger in launch.logging.LaunchLogger.all_loggers:
        if not logger.name.startswith("launch"):
            logger.propagate = True


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny network in the offline MiniLM text space, saved as a checkpoint."""
    import torch

    from clip2scene_core.clip.text_encoders import minilm_spec
    from clip2scene_core.data.labels import SYNTHETIC_CLASSES
    from clip2scene_core.model import TINY_MODEL_CONFIG, build_model
    from clip2scene_core.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = dict(TINY_MODEL_CONFIG, in_channels=1, text_dim=384)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    save_checkpoint(path, model_config=config, state_dict=build_model(config).state_dict(),
                    text_encoder=minilm_spec(), voxel_size=0.2, input_features=["intensity"],
                    train_classes=list(SYNTHETIC_CLASSES), metrics={})
    return path


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A tiny random 3D network in the text space of a random open_clip ViT-S-32 saved to a file.

    The file stands in for real CLIP weights: the text tower and the MaskCLIP image teacher (2D-3D
    ensemble) load it, so every process that loads it has the same CLIP.
    """
    import open_clip
    import torch

    from clip2scene_core.clip.text_encoders import open_clip_spec
    from clip2scene_core.model import TINY_MODEL_CONFIG, build_model
    from clip2scene_core.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("clip_checkpoint")
    torch.manual_seed(0)
    weights = folder / "vit_s_32_random.pt"
    torch.save(open_clip.create_model("ViT-S-32", pretrained=None).state_dict(), weights)
    config = dict(TINY_MODEL_CONFIG, in_channels=1, text_dim=384)
    path = folder / "tiny_clip_space.pt"
    save_checkpoint(path, model_config=config, state_dict=build_model(config).state_dict(),
                    text_encoder=open_clip_spec("ViT-S-32", str(weights)), voxel_size=0.2,
                    input_features=["intensity"], train_classes=["road", "car", "tree"], metrics={})
    return path
