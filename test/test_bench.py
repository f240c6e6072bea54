"""The benchmark scripts still run: each on a workload small enough for a test, checking the figures
it prints are there and are numbers (never their values: timings depend on the machine)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"

# script, arguments, patterns its output must contain
CASES = {
    "sparse": (["--channels", "8", "--repeats", "1", "--azimuths", "48"],
               [rf"C = 8 .* {NUMBER} voxels", rf"pure\s+1\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+-?{NUMBER}"]),
    "conversions": (["--sizes", "2000", "--repeats", "1"],
                    [r"2000 points", rf"cloud_to_xyz .*\s{NUMBER}\s+{NUMBER}\s+{NUMBER}"]),
    "panoptic": (["--frames", "1", "--scan-points", "6400", "--repeats", "1"],
                 [rf"(?m)^PQ_things {NUMBER}$", rf"(?m)^teacher_PQ {NUMBER}$", rf"(?m)^student_mIoU {NUMBER}$",
                  rf"(?m)^clustering_ms_max {NUMBER}$", rf"(?m)^objects_percent_of_segment {NUMBER}$"]),
    "synthetic": (["--scenes", "1", "--frames", "1"], [rf"car\s+{NUMBER}", rf"reading is {NUMBER}x faster"]),
    "train_throughput": (["--baseline", "none", "--threads", "1", "--workers", "0", "--ddp", "1", "--steps", "2",
                          "--warmup", "2"],
                         [rf"this tree\s+1\s+0\s+{NUMBER}\s+{NUMBER}x", rf"network forward\+backward {NUMBER} %"]),
    # starts the node as a ROS process on loopback (the script sets LOCALHOST and a random domain id)
    "node_latency": (["--model", "tiny", "--sizes", "2000", "--frames", "2"],
                     [rf"2000 \|\s+{NUMBER}ms\s+{NUMBER}ms \|\s+{NUMBER}ms\s+{NUMBER}ms \|\s+{NUMBER}x"]),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_bench_script_runs_and_prints_its_figures(script, tmp_path, request):
    if script == "node_latency":
        request.getfixturevalue("ros_env")  # loopback-only ROS variables, set in os.environ
    arguments, patterns = CASES[script]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), *arguments],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for pattern in patterns:
        assert re.search(pattern, result.stdout), f"{pattern!r} not in:\n{result.stdout}"
