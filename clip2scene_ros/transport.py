"""The DDS transport settings the node's process runs with (large clouds over shared memory).

Fast DDS sends a message bigger than the publishing participant's shared-memory segment (default
512 KiB) as ~64 KiB fragments; over best effort one lost fragment loses the cloud, and at 10 Hz most
2 MB clouds were lost that way. ``config/fastdds.xml`` gives the participant a 32 MiB segment. It is
applied through ``FASTDDS_DEFAULT_PROFILES_FILE`` before ROS starts, by the node's ``main`` (so
``ros2 run`` and a plain ``clip2scene_segment`` get it) and by ``launch/segment.launch.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

from clip2scene_ros.package_files import package_file

#: Variables Fast DDS reads its XML profiles from (the second is the Fast DDS 2 name, still honoured).
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
PROFILE_FILE = ("config", "fastdds.xml")


def shipped_profile() -> Path:
    """The package's Fast DDS profile (``share/clip2scene_ros/config/fastdds.xml``)."""
    return package_file(*PROFILE_FILE)


def uses_fast_dds(environ: MutableMapping[str, str]) -> bool:
    """True when ROS will use Fast DDS (the default RMW of the Kilted wheels and distributions)."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def apply_transport_profile(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Point Fast DDS at the shipped profile unless the user chose a profile or another RMW.

    Must run before ``rclpy.init`` (Fast DDS reads the variable when the participant is created).
    Returns one line saying which transport settings the process uses, for the node's log.
    """
    environ = os.environ if environ is None else environ
    if not uses_fast_dds(environ):
        return f"DDS transport: {environ['RMW_IMPLEMENTATION']}'s own settings"
    for variable in PROFILE_VARIABLES:
        if environ.get(variable):
            return f"DDS transport: Fast DDS profile {environ[variable]} (from {variable})"
    profile = str(shipped_profile())
    environ[PROFILE_VARIABLES[0]] = profile
    return f"DDS transport: Fast DDS profile {profile} (shipped: 32 MiB shared-memory segment)"
