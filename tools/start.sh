#!/usr/bin/env bash
# The README's main command.
#   bash tools/start.sh           set up, then start ComfyUI with the pack at http://127.0.0.1:8188
#   bash tools/start.sh --demo    set up, then run the talking-portrait workflow headless; prints the mp4
# Environment: SAYANYTHING_PORT (default 8188), SAYANYTHING_COMFYUI (ComfyUI folder, default
# .cache/comfyui), SAYANYTHING_VENV. Nothing already in ComfyUI's folders is overwritten.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SAYANYTHING_VENV:-$ROOT/.venv}/bin/python"
COMFY="${SAYANYTHING_COMFYUI:-$ROOT/.cache/comfyui}"
PORT="${SAYANYTHING_PORT:-8188}"
MODE="${1:-}"
case "$MODE" in
    ""|--demo) ;;
    *) echo "usage: bash tools/start.sh [--demo]" >&2; exit 2 ;;
esac

# 1. Everything the pack needs: system tools, .venv, ComfyUI 0.3.75 in .cache/comfyui.
bash "$ROOT/tools/setup.sh"

# 2. The pack in ComfyUI's custom_nodes (a link to this checkout).
mkdir -p "$COMFY/custom_nodes"
link="$COMFY/custom_nodes/comfyui-sayanything"
if [ ! -e "$link" ]; then
    ln -s "$ROOT" "$link"
fi

# 3. Default model, Whisper tiny.en and the demo inputs into ComfyUI's models/ and input/ (skipped
#    when present), and the example workflows into the Workflows sidebar (also served as the pack's
#    templates from workflows/).
"$PY" "$ROOT/tools/demo_assets.py" install --base "$COMFY"
workflows="$COMFY/user/default/workflows"
mkdir -p "$workflows"
for file in "$ROOT"/workflows/*.json; do
    [ -e "$workflows/$(basename "$file")" ] || cp "$file" "$workflows/"
done

# 4. Run.
if [ "$MODE" = "--demo" ]; then
    echo "[start] running workflows/sayanything_talking_image.json headless (demo settings: 4 steps, 256 px crops)"
    outputs="$("$PY" "$ROOT/tools/run_workflow.py" "$ROOT/workflows/sayanything_talking_image.json" --base "$COMFY" \
        --set SayAnythingSampler.steps=4 --set SayAnythingFaceCrop.crop_size=256)"
    for path in $outputs; do
        echo "[start] saved: $path"
    done
    exit 0
fi
cpu=()
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || cpu=(--cpu)
echo "[start] ComfyUI with SayAnything: open http://127.0.0.1:$PORT (example workflows: Workflows sidebar, or Templates > comfyui-sayanything)"
exec "$PY" "$ROOT/tools/comfyui.py" "${cpu[@]}" --listen 127.0.0.1 --port "$PORT"
