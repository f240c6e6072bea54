"""The package installs the layout `ros2 run` / `ros2 launch` expect, with pip and with colcon."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ros_harness import ROOT

PACKAGE = "clip2scene_ros"
SOURCE_ITEMS = ("setup.py", "setup.cfg", "package.xml", "README.md", "LICENSE", "resource", "launch",
                "config", "models", "clip2scene_core", "clip2scene_ros")


def copy_source(destination: Path) -> Path:
    """Copy the package sources (not the venv or build outputs) to ``destination``."""
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in SOURCE_ITEMS:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=ignore)
        else:
            shutil.copy2(source, destination / item)
    return destination


def check_ros_layout(prefix: Path) -> None:
    """Assert the files a ROS 2 install of this package must have under ``prefix``."""
    executable = prefix / "lib" / PACKAGE / "clip2scene_segment"
    assert executable.is_file(), f"missing node executable {executable}"
    assert os.access(executable, os.X_OK), f"{executable} is not executable"
    assert executable.read_text().startswith("#!"), "node launcher needs a shebang"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "segment.launch.py").is_file()
    assert (share / "config" / "segment.yaml").is_file()
    assert (share / "config" / "fastdds.xml").is_file(), "the large-cloud Fast DDS profile"
    assert (share / "models" / "demo.pt").is_file(), "the demo network"
    assert sorted(p.name for p in (share / "config" / "classes").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "config" / "classes").glob("*.yaml")
    )


def node_answers(executable: Path, env: dict) -> str:
    """Run the installed node executable with ``--help`` and return what it printed."""
    result = subprocess.run([str(executable), "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_pip_wheel_installs_the_ros_layout(tmp_path):
    """The wheel pip installs carries the node launcher (executable) and share/ files under its
    data scheme, which pip maps onto the install prefix. (Installing it here would replace the dev
    venv's editable install, so the wheel is inspected instead; colcon installs for real below.)"""
    import stat
    import zipfile

    source = copy_source(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("clip2scene_ros-*.whl"))
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = Path(info.filename).parts
            if len(parts) > 2 and parts[0].endswith(".data") and parts[1] == "data":
                target = prefix.joinpath(*parts[2:])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(info))
                target.chmod((info.external_attr >> 16) & 0o777 or 0o644)
        names = archive.namelist()
    assert any(name.startswith("clip2scene_core/") for name in names)
    assert any(name.startswith("clip2scene_ros/") for name in names)
    check_ros_layout(prefix)
    launcher = prefix / "lib" / PACKAGE / "clip2scene_segment"
    assert launcher.stat().st_mode & stat.S_IXUSR
    assert launcher.read_text().splitlines()[0] == f"#!{sys.executable}", "launcher must run the installing Python"


@pytest.mark.usefixtures("ros_env")
def test_colcon_build_installs_a_working_node(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.skip("colcon is not installed in this venv")
    workspace = tmp_path / "ws"
    copy_source(workspace / "src" / PACKAGE)
    result = subprocess.run(
        [str(colcon), "build", "--base-paths", "src"], cwd=workspace, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = workspace / "install" / PACKAGE
    check_ros_layout(prefix)
    # Run the built node from the install space only: its own site-packages, not the checkout.
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env.get("AMENT_PREFIX_PATH", "")])
    printed = node_answers(prefix / "lib" / PACKAGE / "clip2scene_segment", env)
    assert "checkpoint" in printed
