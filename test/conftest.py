"""Shared fixtures: real-data fixture paths and a safe ROS 2 environment."""
from __future__ import annotations

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
