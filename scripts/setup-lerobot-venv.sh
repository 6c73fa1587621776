#!/usr/bin/env bash
# Build the separate venv in which tests/test_export_lerobot.py loads our LeRobot export with the
# real lerobot package (the test skips while this venv is absent). Never touches .venv.
#
#   ACTSTUDIO_LEROBOT_VENV=/path/to/venv bash scripts/setup-lerobot-venv.sh   (default: .lerobot-venv)
#
# Why separate: lerobot 0.6.1 requires Python >= 3.12 and torch < 2.12 (it pulls torch 2.11 +
# torchvision 0.26, a CUDA build of about 3 GB from PyPI), while .venv is Python 3.11 with torch 2.13.
# torchcodec, lerobot's default video decoder, needs FFmpeg's shared libraries (4–8); without them
# lerobot falls back to PyAV, and the check script then tests PyAV only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ACTSTUDIO_LEROBOT_VENV:-.lerobot-venv}
PY=${ACTSTUDIO_LEROBOT_PYTHON:-}
if [[ -z $PY ]]; then
  for cand in python3.12 python3.13 /root/.pyenv/versions/3.12.*/bin/python3.12; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      PY=$cand
      break
    fi
  done
fi
if [[ -z $PY ]]; then
  echo "lerobot 0.6.1 needs Python >= 3.12; none found (set ACTSTUDIO_LEROBOT_PYTHON)" >&2
  exit 1
fi
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "lerobot[dataset]==0.6.1"
# FFmpeg 5 libraries for torchcodec (Debian bookworm), when this machine lets us install them.
if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && ! ldconfig -p | grep -q 'libavutil\.so\.'; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 libavdevice59 >/dev/null \
    || echo "FFmpeg libraries not installed: lerobot will decode with PyAV only" >&2
fi
"$VENV/bin/python" -c "import lerobot, torch; from lerobot.datasets import LeRobotDataset; print('lerobot venv ready:', '$VENV', 'torch', torch.__version__)"
