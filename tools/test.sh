#!/usr/bin/env bash
# Run the test suite: sets up the venv (tools/bootstrap.sh), then pytest inside a private network
# namespace with only loopback up (unshare -n) where the kernel allows it, so DDS traffic from the ROS
# tests can never leave this machine. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/bootstrap.sh"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
PYTEST=("$CLIP2SCENE_PYTHON" -m pytest "$@")
if unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up 2>/dev/null || true; export CLIP2SCENE_NETNS=isolated; exec "$@"' _ "${PYTEST[@]}"
elif unshare -rn true 2>/dev/null; then
  exec unshare -rn bash -c 'ip link set lo up 2>/dev/null || true; export CLIP2SCENE_NETNS=isolated; exec "$@"' _ "${PYTEST[@]}"
fi
echo "[test] unshare -n is not available here: ROS tests rely on ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" >&2
exec "${PYTEST[@]}"
