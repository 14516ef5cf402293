"""Pixel layouts at the boundaries, converted in one place.

- frames / IMAGE: ``torch.float32 [T, H, W, 3]`` in 0..1 (ComfyUI's layout)
- uint8 pixels: ``[T, H, W, 3]`` RGB (video files, the face modules, training shards)
- model input: ``[T, 3, S, S]`` in -1..1
"""

from __future__ import annotations

import numpy as np
import torch


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """IMAGE ``[..., H, W, 3]`` float 0..1 -> numpy uint8 RGB."""
    return (frames[..., :3].clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def uint8_to_frames(pixels) -> torch.Tensor:
    """uint8 RGB ``[..., H, W, 3]`` (numpy or torch) -> IMAGE float 0..1."""
    return torch.as_tensor(pixels).float() / 255.0


def images_to_model(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[T, S, S, 3]`` 0..1 -> model input ``[T, 3, S, S]`` in -1..1."""
    return images[..., :3].permute(0, 3, 1, 2).float() * 2.0 - 1.0


def model_to_images(frames: torch.Tensor) -> torch.Tensor:
    """Model output ``[T, 3, S, S]`` in -1..1 -> IMAGE ``[T, S, S, 3]`` 0..1."""
    return ((frames.float().cpu() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def uint8_to_model(pixels) -> torch.Tensor:
    """uint8 crops ``[T, S, S, 3]`` (numpy or torch; training shards) -> model input ``[T, 3, S, S]`` in -1..1."""
    return torch.as_tensor(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def model_to_uint8(video: torch.Tensor) -> np.ndarray:
    """Model output ``[T, 3, S, S]`` in -1..1 -> numpy uint8 ``[T, S, S, 3]``."""
    return ((video.float() + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def uint8_to_mask(mask) -> torch.Tensor:
    """uint8 masks ``[T, S, S]`` (255 = regenerate; training shards) -> ``[T, 1, S, S]`` float 0..1."""
    return torch.as_tensor(mask).float()[:, None] / 255.0


def broadcast_mask(mask: torch.Tensor, num_frames: int, size: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """A MASK of one frame or one per frame -> ``[T, H, W]`` float; clear errors for other shapes."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{name} must be [frames, height, width], got {tuple(mask.shape)}")
    if tuple(mask.shape[1:]) != tuple(size):
        raise ValueError(
            f"{name} is {mask.shape[2]}x{mask.shape[1]} but the frames are {size[1]}x{size[0]}; "
            "draw or resize the mask at the frame size"
        )
    if mask.shape[0] == 1:
        mask = mask.expand(num_frames, *size)
    if mask.shape[0] != num_frames:
        raise ValueError(
            f"{name} has {mask.shape[0]} frames but the video has {num_frames}; give one mask or one per frame"
        )
    return mask.float().clamp(0, 1)
