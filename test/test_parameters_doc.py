"""docs/parameters.md is what tools/gen_parameters_doc.py makes of the node's descriptors and defaults."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ros_harness import ROOT

pytest.importorskip("rcl_interfaces", reason="the node's descriptors need the ROS 2 message packages")


def test_committed_parameters_doc_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_parameters_doc.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_node_parameter_is_documented():
    text = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    from clip2scene_ros.node_parameters import DESCRIPTORS

    assert all(f"| `{name}` |" in text for name in DESCRIPTORS)
