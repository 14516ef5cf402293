"""Keep diffusers importable where torchvision is installed but its compiled ops cannot load.

diffusers imports transformers, which imports torchvision when it is installed. ComfyUI's requirements
install torchvision from the registry, a CUDA-linked build; on a CPU-only torch its ``_C`` library
fails to load and ``import torchvision`` then dies on ``operator torchvision::nms does not exist``.
Declaring the two op schemas torchvision registers unguarded lets it import (its ops stay unusable,
and nothing here uses them). On a working install the library loads and this does nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_library = None  # the torch.library handle must stay alive for the schemas to stay registered


def make_torchvision_importable() -> None:
    global _library
    if _library is not None or "torchvision" in sys.modules or _nms_declared():
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    compiled = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    if not compiled:
        return
    try:
        torch.ops.load_library(compiled[0])
        return
    except OSError:
        pass
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _nms_declared() -> bool:
    """True when something (a real torchvision, or a test set-up) already declared the ops."""
    try:
        torch.ops.torchvision.nms  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA compute capability 8.0 (Ampere) and up.

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only emulated (T4, RTX 20xx, V100), at a
    large cost in speed; diffusers and ComfyUI choose fp16 there.
    """
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def vae_dtype(device: torch.device | str, model_dtype: torch.dtype) -> torch.dtype:
    """The VAE's precision beside a model in ``model_dtype`` (ComfyUI's rule for its own VAEs): on CUDA bf16 where
    it is native, else fp32 (an fp16 canvas encode loses detail); elsewhere the model's."""
    if torch.device(device).type != "cuda":
        return model_dtype
    return torch.bfloat16 if native_bf16(device) else torch.float32


def has_triton() -> bool:
    """Whether ``torch.compile`` can build GPU kernels here (Triton is installed and works)."""
    try:
        from torch.utils._triton import has_triton as torch_has_triton
    except ImportError:
        return False
    return torch_has_triton()
