#!/usr/bin/env bash
# README command 1: install what is missing, then open ActStudio (simulated lab by default).
# Extra arguments go to main.py, e.g. `bash scripts/run-app.sh --robot franka:172.16.0.2`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ $# -eq 0 ]; then
  echo "[run-app] no display: starting the window on a virtual X server (xvfb-run)"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python main.py "$@"
fi
exec .venv/bin/python main.py "$@"
