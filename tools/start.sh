#!/usr/bin/env bash
# The README's main command.
#   bash tools/start.sh           set up, then start ComfyUI with the pack at http://127.0.0.1:8188
#   bash tools/start.sh --demo    set up, run the talking-portrait workflow headless and the toy demo; prints both mp4s
#   bash tools/start.sh --setup-only  set up (steps 1-3 below) and exit without starting ComfyUI
# Environment: SAYANYTHING_PORT (default 8188), SAYANYTHING_COMFYUI (ComfyUI folder, default
# .cache/comfyui), SAYANYTHING_BASE (folder for models/, input/, output/, user/; default the ComfyUI
# folder), SAYANYTHING_VENV, SAYANYTHING_SKIP_SETUP=1 (already set up). Nothing already in those
# folders is overwritten.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SAYANYTHING_VENV:-$ROOT/.venv}/bin/python"
COMFY="${SAYANYTHING_COMFYUI:-$ROOT/.cache/comfyui}"
BASE="${SAYANYTHING_BASE:-$COMFY}"
PORT="${SAYANYTHING_PORT:-8188}"
MODE="${1:-}"
case "$MODE" in
    ""|--demo|--setup-only) ;;
    *) echo "usage: bash tools/start.sh [--demo|--setup-only]" >&2; exit 2 ;;
esac

# 1. Everything the pack needs: system tools, .venv, ComfyUI 0.3.75 in .cache/comfyui.
if [ "${SAYANYTHING_SKIP_SETUP:-0}" != 1 ]; then
    bash "$ROOT/tools/setup.sh"
fi

# 2. The pack in ComfyUI's custom_nodes (a link to this checkout), unless it is already there.
mkdir -p "$BASE/custom_nodes"
nodes_dir="$(cd "$BASE/custom_nodes" && pwd -P)"
if [ "$(dirname "$(cd "$ROOT" && pwd -P)")" != "$nodes_dir" ]; then
    link="$BASE/custom_nodes/comfyui-sayanything"
    [ -e "$link" ] || ln -s "$ROOT" "$link"
fi

# 3. Default model, Whisper tiny.en and the demo inputs into ComfyUI's models/ and input/ (skipped
#    when present), and the example workflows into the Workflows sidebar (also served as the pack's
#    templates from workflows/).
(cd "$ROOT" && "$PY" -m tools.demo_assets install --base "$BASE")
workflows="$BASE/user/default/workflows"
mkdir -p "$workflows"
for file in "$ROOT"/workflows/*.json; do
    [ -e "$workflows/$(basename "$file")" ] || cp "$file" "$workflows/"
done

# 4. Run.
if [ "$MODE" = "--setup-only" ]; then
    echo "[start] set up: ComfyUI in $COMFY, the pack, models, inputs and workflows in $BASE"
    exit 0
fi
if [ "$MODE" = "--demo" ]; then
    # Demo settings keep a CPU run to a few minutes: 10 fps, 128 px crops, 4 steps.
    echo "[start] running workflows/sayanything_talking_image.json headless (10 fps, 128 px crops, 4 steps)"
    outputs="$(cd "$ROOT" && "$PY" -m tools.run_workflow "$ROOT/workflows/sayanything_talking_image.json" --base "$BASE" \
        --set PrimitiveFloat.value=10 --set SayAnythingFaceCrop.crop_size=128 --set SayAnythingSampler.steps=4)"
    for path in $outputs; do
        case "$path" in *.mp4) echo "[start] lip-synced video: $path" ;; esac
    done
    # The shipped toy model on a newly generated drawn character (a new folder each run: nothing is replaced).
    echo "[start] rendering the toy demo: a generated character speaks with the shipped toy model"
    demo="$BASE/output/sayanything_toy_demo_$(date +%Y%m%d-%H%M%S)"
    demo_mp4="$(cd "$ROOT" && "$PY" -m lipsync_core toy "$demo" --demo --whisper "$BASE/models/whisper/whisper-tiny" | tail -n 1)"
    echo "[start] toy demo video: $demo_mp4"
    exit 0
fi
cpu=()
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || cpu=(--cpu)
echo "[start] ComfyUI with SayAnything: open http://127.0.0.1:$PORT (example workflows: Workflows sidebar, or Templates > comfyui-sayanything)"
base_args=()
[ "$BASE" = "$COMFY" ] || base_args=(--base-directory "$BASE")
exec "$PY" "$ROOT/tools/comfyui.py" "${cpu[@]}" "${base_args[@]}" --listen 127.0.0.1 --port "$PORT"
