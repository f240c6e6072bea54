"""Node overhead: bare `Segmenter` time vs end-to-end node latency, on the same clouds, in one run.

    .venv/bin/python bench/node_latency.py [--checkpoint model.pt] [--sizes 35000 100000] [--frames 20]

Without --checkpoint a randomly initialised network (--model default | tiny; MiniLM text space) is used:
latency does not depend on the weights. End-to-end = publish on ``points`` -> labelled cloud received on
``~/output/pointcloud`` (reliable QoS, one cloud in flight at a time, loopback DDS). Prints p50/p95 and the
ratio end-to-end / bare (target <= 1.15). ROS traffic stays on this machine
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a random domain id).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: The node's output under its own name (no remapping).
OUTPUT = "/clip2scene_segment/output/pointcloud"


def synthetic_cloud(count: int, seed: int) -> dict:
    """A LiDAR-like cloud: rings on a ground plane plus scattered obstacles."""
    rng = np.random.default_rng(seed)
    ground = count * 2 // 3
    radius = rng.uniform(3, 60, ground)
    angle = rng.uniform(-np.pi, np.pi, ground)
    xyz = np.concatenate([
        np.stack([radius * np.cos(angle), radius * np.sin(angle), rng.normal(-1.7, 0.02, ground)], 1),
        rng.uniform([-40, -40, -1.7], [40, 40, 3], (count - ground, 3)),
    ]).astype(np.float32)
    return {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": rng.random(count, np.float32)}


def random_checkpoint(folder: Path, preset: str) -> Path:
    import torch

    from clip2scene_core.clip.text_encoders import minilm_spec
    from clip2scene_core.data.labels import SYNTHETIC_CLASSES
    from clip2scene_core.model import build_model
    from clip2scene_core.checkpoint import save_checkpoint
    from clip2scene_core.train.pretrain import MODEL_PRESETS

    torch.manual_seed(0)
    config = dict(MODEL_PRESETS[preset], in_channels=1, text_dim=384)
    path = folder / f"random_{preset}.pt"
    save_checkpoint(path, model_config=config, state_dict=build_model(config).state_dict(),
                    text_encoder=minilm_spec(), voxel_size=0.1, input_features=["intensity"],
                    train_classes=list(SYNTHETIC_CLASSES), metrics={})
    return path


def percentiles(values: list) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def bare_times(checkpoint: Path, clouds: list, cache: Path) -> list:
    from clip2scene_core.segmenter import Segmenter

    segmenter = Segmenter(checkpoint, device="cpu", text_cache_dir=cache)
    times = []
    for columns in [clouds[0]] + clouds:  # first call warms up
        points = np.stack([columns["x"], columns["y"], columns["z"]], 1)
        start = time.perf_counter()
        segmenter.segment(points, columns["intensity"])
        times.append((time.perf_counter() - start) * 1e3)
    return times[1:]


def node_times(checkpoint: Path, clouds: list, cache: Path) -> list:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from clip2scene_ros.conversions import make_cloud

    node_process = subprocess.Popen(
        [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args", "--params-file",
         str(ROOT / "config" / "segment.yaml"), "-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu",
         "-p", f"text_cache_dir:={cache}", "-p", "reliability:=reliable", "-p", "max_points:=1000000"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("latency_bench")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(PointCloud2, "/clip2scene_segment/input/pointcloud", qos)
    received = []
    node.create_subscription(PointCloud2, OUTPUT, lambda m: received.append(time.perf_counter()), qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 180
        while publisher.get_subscription_count() == 0 or node.count_publishers(OUTPUT) == 0:
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError("the node did not come up")
            executor.spin_once(timeout_sec=0.1)
        messages = [make_cloud(c, frame_id="lidar") for c in [clouds[0]] + clouds]
        times = []
        for message in messages:
            before = len(received)
            start = time.perf_counter()
            publisher.publish(message)
            while len(received) == before:
                executor.spin_once(timeout_sec=0.01)
            times.append((received[-1] - start) * 1e3)
        return times[1:]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        node_process.terminate()
        node_process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[35_000, 100_000])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--model", choices=("default", "tiny"), default="default",
                        help="network of the random checkpoint when --checkpoint is not given")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("AMENT_PREFIX_PATH", str(Path(sys.executable).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = args.checkpoint or random_checkpoint(folder, args.model)
        print(f"checkpoint: {checkpoint}   frames per size: {args.frames}   device: cpu")
        print(f"{'points':>8} | {'bare p50':>9} {'bare p95':>9} | {'node p50':>9} {'node p95':>9} | ratio p50")
        for size in args.sizes:
            clouds = [synthetic_cloud(size, seed) for seed in range(args.frames)]
            bare = percentiles(bare_times(checkpoint, clouds, folder / "cache"))
            node = percentiles(node_times(checkpoint, clouds, folder / "cache"))
            print(f"{size:>8} | {bare[0]:>7.1f}ms {bare[1]:>7.1f}ms | {node[0]:>7.1f}ms {node[1]:>7.1f}ms |"
                  f" {node[0] / bare[0]:>8.3f}x")


if __name__ == "__main__":
    main()
