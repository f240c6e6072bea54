"""Start real ROS 2 processes safely from tests.

Every process (and the test process itself) gets: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, one
``ROS_DOMAIN_ID`` unique to the test session, a log folder in a temporary directory, and the venv's
ament prefix. ``tools/test.sh`` additionally runs the whole session inside ``unshare -n`` with only ``lo``
up, so DDS traffic cannot leave the machine even if a setting were wrong.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]


def ros_environment(log_dir: Path, domain_id: int) -> dict[str, str]:
    """Environment variables for ROS processes of one test session."""
    prefix = Path(sys.executable).resolve().parents[1]
    ament = os.environ.get("AMENT_PREFIX_PATH", "")
    if str(prefix) not in ament.split(os.pathsep):
        ament = os.pathsep.join(p for p in (str(prefix), ament) if p)
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOG_DIR": str(log_dir),
        "AMENT_PREFIX_PATH": ament,
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    }


def session_domain_id() -> int:
    """A domain id unlikely to be shared with a concurrent test session on this machine (1..100)."""
    return 1 + (os.getpid() % 100)


class RosProcess:
    """A child process running ROS code, stopped (SIGINT, then SIGTERM, then SIGKILL) on exit.

    Output goes to ``<log_dir>/<name>.log`` so a failing test can show it.
    """

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, cwd: Optional[Path] = None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            list(argv),
            cwd=str(cwd or ROOT),
            env=dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def poll(self) -> Optional[int]:
        return self.process.poll()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"{self.name} did not exit in {timeout} s:\n{self.output()}") from error

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """Ask the process to stop like Ctrl-C would, escalating if it does not."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "RosProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spin_until(executor, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Spin ``executor`` until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        executor.spin_once(timeout_sec=0.05)
