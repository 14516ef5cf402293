#!/usr/bin/env bash
# mediapipe 0.10.21 into the environment of PYTHON: the last release whose legacy face mesh has its
# models built in, so face tracking works offline without models/mediapipe/face_landmarker.task.
# Its own metadata would pull numpy<2, opencv-contrib-python and jax, so it goes in without
# dependencies plus the few it imports (protobuf 5+ breaks it). Python 3.9-3.12 only (no other wheels).
# Usage: bash tools/install_offline_mediapipe.sh PYTHON   (for a ComfyUI install: its python)
set -euo pipefail
PY="${1:-python}"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
pip_install --no-deps mediapipe==0.10.21
pip_install absl-py attrs matplotlib "protobuf>=4.25.3,<5" flatbuffers sounddevice
"$PY" -c "import cv2" 2>/dev/null || pip_install opencv-python-headless
