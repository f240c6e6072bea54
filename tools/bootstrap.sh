#!/usr/bin/env bash
# Create or update the project venv with every dependency pinned by constraints.txt.
# Sourced by tools/test.sh and tools/demo.sh (or by you: `source tools/bootstrap.sh`); safe to run
# again (skips pip when nothing changed). Sourcing sets PATH, AMENT_PREFIX_PATH, CLIP2SCENE_PYTHON
# and, unless set, FASTDDS_DEFAULT_PROFILES_FILE, and leaves the caller's shell options alone (the
# installation runs in a child shell with its own strict mode).
# Besides the editable install (source edits are live), the venv gets the layout `ros2 run` and
# `ros2 launch` look for, as links into the checkout: share/ament_index/.../clip2scene_ros,
# share/clip2scene_ros/{package.xml,launch,config}, lib/clip2scene_ros/clip2scene_segment; and the
# upstream launch system and ros2 CLI from ../shared/ros2-tools when that folder exists.
# Environment: CLIP2SCENE_VENV (default <repo>/.venv), PYTHON (default python3),
# CLIP2SCENE_WITH_ROS=0 to skip the ROS 2 Kilted wheels (when ROS 2 comes from your distribution),
# CLIP2SCENE_ROS2_TOOLS (default <repo>/../shared/ros2-tools).
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  _clip2scene_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if ! bash "$_clip2scene_root/tools/bootstrap.sh"; then
    unset _clip2scene_root
    return 1
  fi
  _clip2scene_venv="${CLIP2SCENE_VENV:-$_clip2scene_root/.venv}"
  export PATH="$_clip2scene_venv/bin:$PATH"
  # The ROS 2 wheels need no setup.bash, only the prefix that holds their ament index.
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":$_clip2scene_venv:"*) ;;
    *) export AMENT_PREFIX_PATH="$_clip2scene_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
  esac
  export CLIP2SCENE_PYTHON="$_clip2scene_venv/bin/python"
  # Large best-effort clouds need the *publishing* process's Fast DDS shared-memory segment to hold
  # them (README, "Large clouds"): every ROS process started from this shell gets the profile.
  if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}${FASTRTPS_DEFAULT_PROFILES_FILE:-}" ]; then
    export FASTDDS_DEFAULT_PROFILES_FILE="$_clip2scene_root/config/fastdds.xml"
  fi
  unset _clip2scene_root _clip2scene_venv
  return 0
fi

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIP2SCENE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
WITH_ROS="${CLIP2SCENE_WITH_ROS:-1}"
ROS2_TOOLS="${CLIP2SCENE_ROS2_TOOLS:-$ROOT/../shared/ros2-tools}"
EXTRAS="minilm,nuscenes,test"
[ "$WITH_ROS" = "1" ] && EXTRAS="ros,$EXTRAS"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.clip2scene-stamp"
WANT="$(cat "$ROOT/constraints.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)-$EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || [ ! -x "$VENV/bin/clip2scene_segment" ]; then
  echo "[bootstrap] installing pinned dependencies into $VENV (first run: several minutes)"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${PIP[@]}" install -q -c "$ROOT/constraints.txt" setuptools wheel
  # torch first and pinned, so nothing later can pull another build.
  "${PIP[@]}" install -q -c "$ROOT/constraints.txt" torch torchvision
  "${PIP[@]}" install -q -c "$ROOT/constraints.txt" -e "$ROOT[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi

# The installed ROS layout, linked to the checkout so edits stay live like the editable install.
# A real file or folder there (from a non-editable install) is left as it is.
link() {
  mkdir -p "$(dirname "$2")"
  if [ -e "$2" ] && [ ! -L "$2" ]; then return 0; fi
  ln -sfn "$1" "$2"
}
link "$ROOT/resource/clip2scene_ros" "$VENV/share/ament_index/resource_index/packages/clip2scene_ros"
link "$ROOT/package.xml" "$VENV/share/clip2scene_ros/package.xml"
# ros2 launch walks share/<package> for launch files without following links to folders: link each.
[ -L "$VENV/share/clip2scene_ros/launch" ] && rm "$VENV/share/clip2scene_ros/launch"
for file in "$ROOT"/launch/*.py; do
  link "$file" "$VENV/share/clip2scene_ros/launch/$(basename "$file")"
done
link "$ROOT/config" "$VENV/share/clip2scene_ros/config"
link "$ROOT/models" "$VENV/share/clip2scene_ros/models"
link "$VENV/bin/clip2scene_segment" "$VENV/lib/clip2scene_ros/clip2scene_segment"

# ros2 launch / run / param / topic: upstream wheels, installed once per version of that folder.
if [ "$WITH_ROS" = "1" ] && [ -f "$ROS2_TOOLS/install.sh" ]; then
  TOOLS_STAMP="$VENV/.ros2-tools-stamp"
  TOOLS_WANT="$(cd "$ROS2_TOOLS" && ls wheels | cat - requirements.txt | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$TOOLS_STAMP" 2>/dev/null)" != "$TOOLS_WANT" ] || [ ! -x "$VENV/bin/ros2" ]; then
    echo "[bootstrap] installing the ros2 command line tools from $ROS2_TOOLS"
    bash "$ROS2_TOOLS/install.sh" "$VENV/bin/python" >/dev/null
    echo "$TOOLS_WANT" > "$TOOLS_STAMP"
  fi
fi
