#!/usr/bin/env bash
# The main job on the embedded default: pretrain a network on the synthetic world without labels,
# record a drive to a rosbag2, replay it through the ROS 2 node (with a run-time class-list change)
# and write a report with pictures to runs/demo/. Extra arguments go to `clip2scene demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/bootstrap.sh"
cd "$ROOT"
exec clip2scene demo "$@"
