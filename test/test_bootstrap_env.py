"""`source tools/bootstrap.sh` sets up the README environment and leaves the caller's shell options alone."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ros_harness import ROOT

VENV = Path(os.environ.get("CLIP2SCENE_VENV", ROOT / ".venv"))


def sourced(prelude: str) -> dict[str, str]:
    """Source bootstrap.sh in a fresh bash after ``prelude``; return the shell's options and variables."""
    script = (f"{prelude}; source tools/bootstrap.sh >/dev/null; "
              "echo opts=$-:$(set -o | grep -c 'pipefail.*on'); "
              "echo profile=$FASTDDS_DEFAULT_PROFILES_FILE; echo ament=$AMENT_PREFIX_PATH")
    env = {key: value for key, value in os.environ.items()
           if key not in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_sourcing_keeps_the_callers_shell_options():
    loose = sourced("set +euo pipefail")
    flags, pipefail = loose["opts"].split(":")
    assert "e" not in flags and "u" not in flags and pipefail == "0", loose["opts"]
    strict = sourced("set -euo pipefail")
    flags, pipefail = strict["opts"].split(":")
    assert "e" in flags and "u" in flags and pipefail == "1", strict["opts"]


def test_sourcing_gives_the_ros_layout_and_the_transport_profile():
    env = sourced("true")
    venv = VENV
    assert env["profile"] == str(ROOT / "config" / "fastdds.xml")
    assert str(venv) in env["ament"].split(":")
    assert (venv / "share" / "ament_index" / "resource_index" / "packages" / "clip2scene_ros").is_file()
    for part in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/fastdds.xml"):
        assert (venv / "share" / "clip2scene_ros" / part).is_file(), part
    assert (venv / "lib" / "clip2scene_ros" / "clip2scene_segment").is_file()
