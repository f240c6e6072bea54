#!/usr/bin/env bash
# Create or update the project venv with every dependency pinned by constraints.txt.
# Sourced by tools/test.sh and tools/demo.sh; safe to run again (skips pip when nothing changed).
# Environment: CLIP2SCENE_VENV (default <repo>/.venv), PYTHON (default python3),
# CLIP2SCENE_WITH_ROS=0 to skip the ROS 2 Kilted wheels (when ROS 2 comes from your distribution).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIP2SCENE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
WITH_ROS="${CLIP2SCENE_WITH_ROS:-1}"
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
export PATH="$VENV/bin:$PATH"
# The ROS 2 wheels need no setup.bash, only the prefix that holds their ament index.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CLIP2SCENE_PYTHON="$VENV/bin/python"
