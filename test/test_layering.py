"""The ROS-free library never depends on the ROS layer: no module of ``clip2scene_core`` imports
``clip2scene_ros`` (checked on the parsed imports, lazy ones inside functions included), and the
ROS-bound subcommands still reach the one ``clip2scene`` CLI through their entry points."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted((ROOT / "clip2scene_core").rglob("*.py")), ids=lambda p: p.name)
def test_core_modules_never_import_the_ros_layer(path):
    ros = {module for module in imported_modules(path)
           if module.split(".")[0] in ("clip2scene_ros", "rclpy", "sensor_msgs", "std_msgs")}
    assert not ros, f"{path.relative_to(ROOT)} imports {sorted(ros)}"


def test_ros_subcommands_reach_the_cli_through_entry_points():
    from clip2scene_core.cli import COMMANDS, all_commands

    commands = all_commands()
    for name in ("demo", "export-bag", "evaluate-bag"):
        assert name not in COMMANDS and commands[name][0].startswith("clip2scene_ros.commands."), name
        assert commands[name][1]  # its one-line help
