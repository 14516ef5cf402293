"""Start ComfyUI 0.3.75 from ``.cache/comfyui`` (or ``$SAYANYTHING_COMFYUI``) on a CPU-only machine.

Usage: ``python tools/comfyui.py [ComfyUI main.py arguments...]``

The registry's torchvision 0.28.0 (ComfyUI imports it) is linked against CUDA; on CPU torch its
import fails with ``operator torchvision::nms does not exist`` because it registers fake kernels for
two operators whose schemas live in the missing C++ library. Defining those two schemas first lets
the pure-Python part of torchvision import; nothing in ComfyUI's CPU path calls the operators.
On a machine whose torchvision imports cleanly this step is skipped.

``copy_comfyui`` copies the ComfyUI folder without the packs, models, inputs and settings put into it
(the Manager-install test builds its ComfyUI so).
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The torchvision operators whose fake kernels are registered unconditionally at import.
TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# A ComfyUI folder's own state, left out of copies: what tools/start.sh and the user put there (models,
# inputs, outputs, saved workflows and settings; ComfyUI's own files in them are placeholders and the
# deprecated checkpoint loader's configs). extra_model_paths.yaml is the user's (tools/install_comfyui.sh
# removes the shipped one).
USER_STATE = ("models", "input", "output", "temp", "user", "extra_model_paths.yaml")
# The files ComfyUI 0.3.75 ships in custom_nodes/; anything else there is a pack someone installed.
SHIPPED_CUSTOM_NODES = ("example_node.py.example", "websocket_image_save.py")


def comfyui_dir() -> Path:
    """The ComfyUI checkout to run: ``$SAYANYTHING_COMFYUI`` or the one tools/setup.sh unpacked."""
    folder = Path(os.environ.get("SAYANYTHING_COMFYUI", REPO / ".cache" / "comfyui")).resolve()
    if not (folder / "main.py").is_file():
        raise SystemExit(
            f"ComfyUI not found in {folder} (no main.py). Run `bash tools/setup.sh` or point "
            "SAYANYTHING_COMFYUI at a ComfyUI 0.3.75 folder."
        )
    return folder


def copy_comfyui(destination: Path, source: Path | None = None) -> Path:
    """``destination``: a copy of the ComfyUI folder (default ``comfyui_dir()``) as installed, without
    the packs in its custom_nodes/ and without its USER_STATE, so a test can build a ComfyUI of its own
    whatever tools/start.sh or the user left in the shared one, and writes nothing into it."""
    source = comfyui_dir() if source is None else Path(source)
    top_level = {"custom_nodes", *USER_STATE}

    def leave_out(folder: str, names: list[str]) -> set[str]:
        left_out = {name for name in names if name == "__pycache__"}
        if Path(folder) == source:
            # Whole folders, even when they are links (a models/ on another disk, say): nothing in them is copied.
            left_out |= top_level.intersection(names)
        return left_out

    shutil.copytree(source, destination, symlinks=True, ignore=leave_out)
    (destination / "custom_nodes").mkdir()
    for name in SHIPPED_CUSTOM_NODES:
        if (source / "custom_nodes" / name).is_file():
            shutil.copyfile(source / "custom_nodes" / name, destination / "custom_nodes" / name)
    return destination


def define_missing_torchvision_schemas() -> None:
    """Make a CUDA-only torchvision importable on CPU torch (see the module docstring)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when torchvision's C++ library loads
        return
    except (AttributeError, RuntimeError):
        pass
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError:
        # The failed import left a half-initialised module behind; drop it before retrying.
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for schema in TORCHVISION_SCHEMAS:
        library.define(schema)
    # Keep the library object alive for the whole process: dropping it unregisters the schemas.
    sys.modules[__name__].__dict__["_torchvision_library"] = library


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    folder = comfyui_dir()
    define_missing_torchvision_schemas()
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    sys.argv = [str(folder / "main.py"), *argv]
    runpy.run_path(str(folder / "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
