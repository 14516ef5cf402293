"""Start ComfyUI 0.3.75 from ``.cache/comfyui`` (or ``$SAYANYTHING_COMFYUI``) on a CPU-only machine.

Usage: ``python tools/comfyui.py [ComfyUI main.py arguments...]``

The registry's torchvision 0.28.0 (ComfyUI imports it) is linked against CUDA; on CPU torch its
import fails with ``operator torchvision::nms does not exist`` because it registers fake kernels for
two operators whose schemas live in the missing C++ library. Defining those two schemas first lets
the pure-Python part of torchvision import; nothing in ComfyUI's CPU path calls the operators.
On a machine whose torchvision imports cleanly this step is skipped.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The torchvision operators whose fake kernels are registered unconditionally at import.
TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def comfyui_dir() -> Path:
    """The ComfyUI checkout to run: ``$SAYANYTHING_COMFYUI`` or the one tools/setup.sh unpacked."""
    folder = Path(os.environ.get("SAYANYTHING_COMFYUI", REPO / ".cache" / "comfyui")).resolve()
    if not (folder / "main.py").is_file():
        raise SystemExit(
            f"ComfyUI not found in {folder} (no main.py). Run `bash tools/setup.sh` or point "
            "SAYANYTHING_COMFYUI at a ComfyUI 0.3.75 folder."
        )
    return folder


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
