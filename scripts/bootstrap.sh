#!/usr/bin/env bash
# Installs what ActStudio needs on a fresh machine: Debian packages for headless GL/Qt/USB,
# then a virtual environment in .venv with the project's Python dependencies.
# Idempotent and quick when nothing changed (stamp keyed on pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  xvfb xauth                                   # X server for GL widgets under test / headless
  libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libosmesa6   # MuJoCo offscreen rendering (EGL/OSMesa)
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxkbcommon0 libfontconfig1 libdbus-1-3
  libglib2.0-0 libxrender1 libxi6 libxrandr2 libxext6 libsm6 libice6 # Qt xcb platform
  libusb-1.0-0                                 # pyrealsense2 imports it
  libhidapi-hidraw0 libhidapi-libusb0          # pyspacemouse (hidapi) for a real SpaceMouse
  libgomp1                                     # open3d / torch OpenMP
  fonts-dejavu-core
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[bootstrap] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.actstudio-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, so nothing else can pull a different (CUDA) build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # robomimic without its dependencies (they would pull torchvision and replace torch); see pyproject.toml.
  .venv/bin/python -m pip install -q --no-deps "robomimic==0.3.0"
  echo "$want" > "$stamp"
fi
