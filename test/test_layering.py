"""Dependencies point one way, checked on the parsed imports (lazy ones inside functions and relative
ones included): ``clip2scene_ros`` -> ``clip2scene_core``, never back; inside the library, training
(``train/``) may use inference and the shared modules, never the reverse (only the CLI's ``commands/``
sits above both). The ROS-bound subcommands still reach the one ``clip2scene`` CLI through their
entry points."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from . import x`` gives ``package.x``)."""
    package = list(path.relative_to(ROOT).parts[:-1])  # the package holding the module
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            if node.module:
                modules.add(".".join([*base, node.module]))
            else:  # the names may be submodules or attributes of the package: count both
                modules.add(".".join(base))
                modules.update(".".join([*base, alias.name]) for alias in node.names)
    return modules


def test_imported_modules_resolves_relative_imports():
    path = ROOT / "clip2scene_core" / "data" / "synthetic" / "dataset.py"
    assert {"clip2scene_core.frame", "clip2scene_core.data", "clip2scene_core.data.labels"} <= imported_modules(path)


@pytest.mark.parametrize("path", sorted((ROOT / "clip2scene_core").rglob("*.py")), ids=lambda p: p.name)
def test_core_modules_never_import_the_ros_layer(path):
    ros = {module for module in imported_modules(path)
           if module.split(".")[0] in ("clip2scene_ros", "rclpy", "sensor_msgs", "std_msgs")}
    assert not ros, f"{path.relative_to(ROOT)} imports {sorted(ros)}"


INFERENCE_SIDE = [path for path in sorted((ROOT / "clip2scene_core").rglob("*.py"))
                  if path.relative_to(ROOT / "clip2scene_core").parts[0] not in ("train", "commands")]


@pytest.mark.parametrize("path", INFERENCE_SIDE, ids=lambda p: str(p.relative_to(ROOT / "clip2scene_core")))
def test_inference_and_shared_modules_never_import_training(path):
    training = {module for module in imported_modules(path)
                if module == "clip2scene_core.train" or module.startswith("clip2scene_core.train.")}
    assert not training, f"{path.relative_to(ROOT)} imports {sorted(training)}"


def test_ros_subcommands_reach_the_cli_through_entry_points():
    from clip2scene_core.cli import COMMANDS, all_commands

    commands = all_commands()
    for name in ("demo", "export-bag", "evaluate-bag"):
        assert name not in COMMANDS and commands[name][0].startswith("clip2scene_ros.commands."), name
        assert commands[name][1]  # its one-line help
