#!/usr/bin/env bash
# Regenerate constraints.txt from the current venv (after adding a dependency to setup.py and
# installing it with an exact version). Review the diff before committing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIP2SCENE_VENV:-$ROOT/.venv}"
{
  head -3 "$ROOT/constraints.txt"
  "$VENV/bin/python" -m pip freeze --all --exclude clip2scene_ros --exclude pip
} > "$ROOT/constraints.txt.new"
mv "$ROOT/constraints.txt.new" "$ROOT/constraints.txt"
