"""Class-list changes while a huge encode runs: the newest list wins, and Ctrl-C is honoured in 2 s."""
from __future__ import annotations

import os
import signal
import sys
import time

from node_client import NodeClient
from ros_harness import ROOT, RosProcess, spin_until

HUGE = [f"object kind {index}" for index in range(1024)]  # x 85 templates: minutes of encoding
NEWEST = ["tree", "person", "car"]


def set_string_arrays(client: NodeClient, **values: list[str]) -> None:
    """Set several string-array parameters in one request (one change, one encode)."""
    results = client.set_string_arrays(**values)
    assert all(result.successful for result in results), results


def test_a_newer_list_cancels_a_running_1024_class_encode_and_sigint_is_prompt(
        ros_env, tiny_checkpoint, tmp_path, rclpy_context):
    argv = [sys.executable, "-m", "clip2scene_ros.segment_node", "--ros-args",
            "--params-file", str(ROOT / "config" / "segment.yaml"), "-p", f"checkpoint:={tiny_checkpoint}",
            "-p", "device:=cpu", "-p", f"text_cache_dir:={tmp_path / 'text'}",
            "-p", "class_names:=['car', 'road']", "-p", "prompt_templates:=['a photo of a {}.']"]
    with RosProcess("node", argv, tmp_path) as node:
        client = NodeClient(rclpy_context)
        try:
            client.wait_until_connected(node)
            # 1,024 classes with the 85-template ensemble ([""]): far longer than this test may wait.
            set_string_arrays(client, class_names=HUGE, prompt_templates=[""])
            time.sleep(2.0)  # the huge encode is running now
            started = time.monotonic()
            set_string_arrays(client, class_names=NEWEST)
            spin_until(client.executor, lambda: client.announcements[-1]["classes"] == NEWEST, 60,
                       "the newest list to become active (latest wins)")
            print(f"newest list active {time.monotonic() - started:.1f} s after it was set")
            assert all(len(a["classes"]) < 1024 for a in client.announcements), "the huge list won"
            set_string_arrays(client, class_names=HUGE)
            time.sleep(2.0)  # encoding again, mid-way
        finally:
            client.close()
        started = time.monotonic()
        os.killpg(node.process.pid, signal.SIGINT)
        code = node.wait(timeout=30)
        elapsed = time.monotonic() - started
        log = node.output()
    assert code == 0 and elapsed < 2.0, f"exit {code} after {elapsed:.1f} s:\n{log[-2000:]}"
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
