"""Work-around for environments whose torchvision wheel does not match the CPU torch (opt-in only)."""

from __future__ import annotations

import importlib.util

import torch

_library = None


def define_missing_torchvision_ops() -> None:
    """Let transformers import where torchvision's compiled library cannot load.

    A CUDA-linked torchvision on CPU torch fails at import with ``operator torchvision::nms does not
    exist``: it registers fake kernels for two ops its missing C library would define. Defining the two
    schemas first lets it (and transformers, which imports it when present) load; nothing calls them.
    Called by the test fixtures and the benchmark entry points, never at library import.
    """
    global _library
    if _library is not None or importlib.util.find_spec("torchvision") is None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - the real library is loaded: nothing to do
        return
    except (AttributeError, RuntimeError):
        pass
    try:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library = library
    except RuntimeError:
        pass  # defined already
