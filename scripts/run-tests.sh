#!/usr/bin/env bash
# README command 2: install what is missing, then run the whole test suite headless.
# Extra arguments go to pytest, e.g. `bash scripts/run-tests.sh tests/test_safety.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
exec .venv/bin/python -m pytest "$@"
