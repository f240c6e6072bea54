"""Files the package installs under ``share/clip2scene_ros/`` (or the checkout's copy beside them)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "clip2scene_ros"
CHECKOUT = Path(__file__).resolve().parents[1]


def package_file(*parts: str) -> Path:
    """``share/clip2scene_ros/<parts>`` from the ament index, else the checkout's ``<parts>``.

    Raises FileNotFoundError naming every place looked in.
    """
    candidates = [CHECKOUT.joinpath(*parts)]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # no ROS in this environment: the checkout is all there is
        pass
    else:
        try:
            candidates.insert(0, Path(get_package_share_directory(PACKAGE)).joinpath(*parts))
        except (PackageNotFoundError, OSError):  # not in an ament prefix (or none is set): the checkout
            pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{'/'.join(parts)} not found (looked in {[str(p) for p in candidates]})")


def vocabulary_dirs() -> list[Path]:
    """The installed ``config/classes`` folders of this package: under this Python's prefix (pip)
    and every ``AMENT_PREFIX_PATH`` entry (colcon). Registered in the ``clip2scene.vocabulary_dirs``
    entry-point group, where the ROS-free class-vocabulary lookup finds it."""
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [Path(prefix) / "share" / PACKAGE / "config" / "classes" for prefix in prefixes]
