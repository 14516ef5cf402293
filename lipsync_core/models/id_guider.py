"""ID-Guider: a light convolutional pyramid over the reference image (pixel space, not VAE latents).

The paper's ablation found that fusing VAE features of the reference limits lip motion; a pixel-space
encoder leaves the UNet free to move the mouth while holding the identity. One residual per UNet
resolution, projected by zero-initialised 1x1 convolutions, so a fresh ID-Guider changes nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configs import IDGuiderConfig


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.GroupNorm(_groups(out_channels), out_channels),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.SiLU(),
    )


def _groups(channels: int) -> int:
    return math.gcd(channels, 32)


class IDGuider(nn.Module):
    """Reference ``[B, 3, H, W]`` in -1..1 -> one ``[B, C_i, H / (f * 2**i), W / (f * 2**i)]`` map per resolution.

    ``f`` is the VAE's latent scale factor, ``C_i`` the UNet's ``block_out_channels[i]``.
    """

    def __init__(self, config: IDGuiderConfig, unet_channels: tuple[int, ...]):
        super().__init__()
        if len(config.channels) != len(unet_channels):
            raise ValueError(f"ID-Guider needs one stage per UNet resolution: {config.channels} vs {unet_channels}")
        self.config = config
        first = config.channels[0]
        halvings = int(math.log2(config.latent_scale_factor))
        # Stem: pixels -> latent resolution.
        stem: list[nn.Module] = [nn.Conv2d(3, first, 3, padding=1), nn.SiLU()]
        for _ in range(halvings):
            stem += [nn.Conv2d(first, first, 3, stride=2, padding=1), nn.SiLU()]
        self.stem = nn.Sequential(*stem)
        self.stages = nn.ModuleList()
        self.projections = nn.ModuleList()
        previous = first
        for index, (channels, unet_width) in enumerate(zip(config.channels, unet_channels)):
            self.stages.append(_conv_block(previous, channels, stride=1 if index == 0 else 2))
            projection = nn.Conv2d(channels, unet_width, 1)
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
            self.projections.append(projection)
            previous = channels

    def forward(self, reference: torch.Tensor) -> list[torch.Tensor]:
        if reference.ndim != 4 or reference.shape[1] != 3:
            raise ValueError(f"reference must be [batch, 3, height, width] in -1..1, got {list(reference.shape)}")
        x = self.stem(reference.to(self.stem[0].weight.dtype))
        residuals = []
        for stage, projection in zip(self.stages, self.projections):
            x = stage(x)
            residuals.append(projection(x))
        return residuals
