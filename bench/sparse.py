"""Sparse U-Net speed and memory per backend on a LiDAR-like scan (~100k voxels at 0.1 m).

Prints forward and backward time (median of --repeats, after one warm-up) and peak memory of the
MinkUNet backbone in training mode, for the pure backend (all threads and one thread), spconv (one
thread: it is wrong with more on CPU) and MinkowskiEngine when installed, side by side, with the
ratios to spconv. Every measurement builds a new input, so kernel maps are built inside the
forward as in training. Each case lives in its own process and the cases take turns, run by run,
so that other load on the machine affects them alike. On CPU, peak memory is the growth of the
process's peak RSS over its runs; on CUDA it is ``max_memory_allocated``.

    python bench/sparse.py [--device cpu|cuda] [--channels 32 64] [--repeats 3]

``--channels C`` sets the stem width: C = 32 is the paper's default U-Net
[32, 32, 64, 128, 256, 256, 128, 96, 96]; C = 64 doubles every width.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import os
import resource
import statistics
import time

import torch

from clip2scene_core.model import DEFAULT_MODEL_CONFIG
from clip2scene_core.model.minkunet import MinkUNet
from clip2scene_core.sparse import SparseTensor
from clip2scene_core.sparse.backends import conv_backend
from clip2scene_core.voxel import voxelize

VOXEL_SIZE = 0.1  # metres
IN_CHANNELS = 4  # x, y, z, intensity


def lidar_scan(seed: int = 0, beams: int = 128, azimuths: int = 2048) -> torch.Tensor:
    """Points (N, 3) of a spinning LiDAR 1.8 m above a street: ground rings, two facades, boxes.

    Beams from -25 to +3 degrees, ``azimuths`` steps per turn, 80 m range, 2 cm range noise;
    boxes are cars (4.5 x 1.8 x 1.5 m) and poles (0.3 x 0.3 x 6 m) on the ground.
    """
    g = torch.Generator().manual_seed(seed)
    elevation = torch.deg2rad(torch.linspace(-25.0, 3.0, beams, dtype=torch.float64))
    azimuth = torch.linspace(0, 2 * math.pi, azimuths + 1, dtype=torch.float64)[:-1]
    el, az = torch.meshgrid(elevation, azimuth, indexing="ij")
    rays = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1).reshape(-1, 3)
    far = torch.full((len(rays),), 80.0, dtype=torch.float64)
    ground = torch.where(rays[:, 2] < 0, -1.8 / rays[:, 2].clamp(max=-1e-9), far)
    facade = torch.where(rays[:, 1].abs() > 1e-9, 12.0 / rays[:, 1].abs().clamp(min=1e-9), far)
    facade = torch.where(facade * rays[:, 2] < 8.2, facade, far)  # buildings 10 m tall
    hit = torch.minimum(torch.minimum(ground, facade), far)
    # Axis-aligned boxes by the slab method: cars along the kerbs, poles on the sidewalks.
    centres, sizes = [], []
    for _ in range(40):
        x = float(torch.rand(1, generator=g)) * 120 - 60
        side = 1 if torch.rand(1, generator=g) < 0.5 else -1
        if torch.rand(1, generator=g) < 0.7:
            centres.append([x, side * 6.0, -1.05]), sizes.append([4.5, 1.8, 1.5])
        else:
            centres.append([x, side * 10.0, 1.2]), sizes.append([0.3, 0.3, 6.0])
    low = torch.tensor(centres, dtype=torch.float64) - torch.tensor(sizes, dtype=torch.float64) / 2
    high = low + torch.tensor(sizes, dtype=torch.float64)
    inv = 1.0 / torch.where(rays.abs() < 1e-12, torch.full_like(rays, 1e-12), rays)
    t0, t1 = low[None] * inv[:, None], high[None] * inv[:, None]  # (R, B, 3)
    t_near = torch.minimum(t0, t1).max(dim=2).values
    t_far = torch.maximum(t0, t1).min(dim=2).values
    box_hit = torch.where((t_near <= t_far) & (t_near > 0), t_near, far[:, None]).min(dim=1).values
    hit = torch.minimum(hit, box_hit)
    keep = hit < 80.0
    noise = torch.randn(int(keep.sum()), generator=g, dtype=torch.float64) * 0.02
    return (rays[keep] * (hit[keep] + noise)[:, None]).float()


def make_input(points: torch.Tensor, device: torch.device) -> SparseTensor:
    """A fresh stride-1 SparseTensor of the scan's voxels with (x, y, z, intensity) features."""
    voxels = voxelize(points.to(device), VOXEL_SIZE)
    centres = (voxels.coords[:, 1:].float() + 0.5) * VOXEL_SIZE
    feats = torch.cat([centres, torch.rand(len(centres), 1, device=device)], dim=1)
    return SparseTensor(feats, voxels.coords, 1)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(conn, backend: str, threads: int, channels: int, device_name: str, points: torch.Tensor) -> None:
    """One backend's MinkUNet in its own process: times a forward + backward per "run" request.

    Replies (forward s, backward s, process CPU s of both, voxels) per run; on "stop" replies the peak memory (bytes) of
    all runs. Errors are sent back as strings.
    """
    try:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        device = torch.device(device_name)
        widths = [w * channels // 32 for w in DEFAULT_MODEL_CONFIG["widths"]]
        model = MinkUNet(IN_CHANNELS, widths, DEFAULT_MODEL_CONFIG["blocks_per_stage"],
                         conv_backend(backend, 2 ** (len(widths) // 2))).to(device).train()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        rss_before = _peak_rss_bytes()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        conn.send("ready")
        while conn.recv() == "run":
            x = make_input(points, device)
            sync()
            cpu_start, start = time.process_time(), time.perf_counter()
            out = model(x)
            sync()
            middle = time.perf_counter()
            out.feats.square().mean().backward()
            sync()
            end, cpu_end = time.perf_counter(), time.process_time()
            model.zero_grad(set_to_none=True)
            del out
            conn.send((middle - start, end - middle, cpu_end - cpu_start, x.num_voxels))
        conn.send(torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss_bytes() - rss_before)
    except Exception as error:  # e.g. a CPU-only library build asked to run on CUDA
        conn.send(f"{type(error).__name__}: {error}")


def compare(cases: list[tuple[str, int]], channels: int, repeats: int, device: str,
            points: torch.Tensor) -> tuple[dict, dict]:
    """Run the cases round-robin (one warm-up round, then ``repeats``), so that a change in the
    machine's load hits all of them alike. Returns (results per case, failure reason per case)."""
    context = multiprocessing.get_context("spawn")
    links, failures = {}, {}
    for case in cases:
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, *case, channels, device, points))
        process.start()
        reply = parent.recv()
        if reply == "ready":
            links[case] = (parent, process)
        else:
            failures[case] = reply
            process.join()
    times = {case: [] for case in links}
    for round_index in range(repeats + 1):
        for case, (conn, _) in list(links.items()):
            conn.send("run")
            reply = conn.recv()
            if isinstance(reply, str):
                failures[case] = reply
                del links[case]
            elif round_index:  # round 0 is the warm-up
                times[case].append(reply)
    results = {}
    for case, (conn, process) in links.items():
        conn.send("stop")
        peak = conn.recv()
        process.join()
        runs = times[case]
        results[case] = {"voxels": runs[0][3], "forward": statistics.median(r[0] for r in runs),
                         "backward": statistics.median(r[1] for r in runs),
                         "cpu": statistics.median(r[2] for r in runs), "peak_mib": peak / 2**20}
    return results, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64], help="stem widths C")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--azimuths", type=int, default=2048, help="LiDAR azimuth steps (voxel count)")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OMP_WAIT_POLICY=PASSIVE in the workers: on a machine shared with other jobs, "
                             "spinning OpenMP threads otherwise stall multi-threaded runs")
    args = parser.parse_args()
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # inherited by the spawned workers

    points = lidar_scan(azimuths=args.azimuths)
    all_threads = torch.get_num_threads()
    library_threads = 1 if args.device == "cpu" else all_threads
    cases = [("pure", all_threads)]
    if args.device == "cpu" and all_threads > 1:
        cases.append(("pure", 1))
    if importlib.util.find_spec("spconv") is not None:
        cases.append(("spconv", library_threads))
    if importlib.util.find_spec("MinkowskiEngine") is not None:
        cases.append(("minkowski", all_threads))

    print(f"device {args.device}; {len(points)} points; MinkUNet training-mode forward + backward, "
          f"median of {args.repeats} interleaved runs; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")
    for channels in args.channels:
        results, failures = compare(cases, channels, args.repeats, args.device, points)
        voxels = next(iter(results.values()))["voxels"] if results else 0
        print(f"\nC = {channels} (widths x{channels / 32:g}), {voxels} voxels of {VOXEL_SIZE} m")
        print(f"{'backend':<12}{'threads':>8}{'forward ms':>12}{'backward ms':>13}{'CPU ms':>10}"
              f"{'peak MiB':>10}{'fwd vs spconv':>15}{'f+b vs spconv':>15}")
        reference = results.get(("spconv", library_threads))
        for (backend, threads), r in results.items():
            ratio_f = ratio_fb = ""
            if reference:
                ratio_f = f"{reference['forward'] / r['forward']:.2f}x"
                ratio_fb = f"{(reference['forward'] + reference['backward']) / (r['forward'] + r['backward']):.2f}x"
            print(f"{backend:<12}{threads:>8}{r['forward'] * 1e3:>12.0f}{r['backward'] * 1e3:>13.0f}"
                  f"{r['cpu'] * 1e3:>10.0f}{r['peak_mib']:>10.0f}{ratio_f:>15}{ratio_fb:>15}")
        for (backend, threads), reason in failures.items():
            print(f"{backend:<12}{threads:>8}  failed: {reason}")
    print("\nratios: spconv wall time / this backend's (> 1 = faster than spconv); CPU ms: process CPU "
          "time of forward + backward (all threads; less sensitive to other load than wall time)")


if __name__ == "__main__":
    main()
