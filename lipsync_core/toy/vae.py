"""A small temporal VAE for the toy world (the same diffusers class SVD uses, 4x downsampling)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import torch


def toy_vae_config() -> dict:
    """AutoencoderKLTemporalDecoder config: 64x64 RGB -> 4 x 16 x 16 latents."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "sample_size": 64,
        "scaling_factor": 1.0,
        "force_upcast": False,
    }


def build_toy_vae(config: dict | None = None):
    from ..configs import build_vae

    return build_vae(config or toy_vae_config())


def train_toy_vae(
    clips: list[np.ndarray],
    steps: int,
    seed: int = 0,
    focus: list[np.ndarray] | None = None,
    batch_clips: int = 4,
    frames_per_clip: int = 4,
    patch_size: int = 32,
    learning_rate: float = 2e-3,
    progress: Callable[[int, float], None] | None = None,
):
    """Fit a toy VAE on uint8 clips [T, S, S, 3]; returns it in eval mode with a unit-variance scaling factor.

    The networks are fully convolutional, so they train on patches (4x cheaper at 32 px). focus:
    optional per-clip [T, 2] pixel points (the mouth centre); half the patches are centred there so
    the detail the evaluation looks at is reconstructed sharply.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae = build_toy_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))
    size = clips[0].shape[1]
    vae.train()
    for step in range(steps):
        batch = []
        for k in range(batch_clips):
            index = int(torch.randint(len(clips), (1,), generator=generator))
            start = int(torch.randint(len(clips[index]) - frames_per_clip + 1, (1,), generator=generator))
            if focus is not None and k % 2 == 0:
                x, y = focus[index][start].round().astype(int) - patch_size // 2
                jitter = torch.randint(-4, 5, (2,), generator=generator).tolist()
                x, y = x + jitter[0], y + jitter[1]
            else:
                x, y = torch.randint(size - patch_size + 1, (2,), generator=generator).tolist()
            x, y = int(np.clip(x, 0, size - patch_size)), int(np.clip(y, 0, size - patch_size))
            batch.append(torch.from_numpy(clips[index][start:start + frames_per_clip, y:y + patch_size,
                                                       x:x + patch_size]))
        pixels = torch.stack(batch).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = vae.encode(pixels).latent_dist
        # Deterministic latents (the pipeline encodes with the distribution's mode): converges far faster
        # than sampling from an untrained posterior whose initial spread swamps the means.
        decoded = vae.decode(posterior.mode(), num_frames=frames_per_clip).sample
        loss = (decoded - pixels).abs().mean() + 0.5 * ((decoded - pixels) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step, loss.item())
    vae.eval()
    with torch.no_grad():
        sample = torch.from_numpy(np.concatenate([clip[:8] for clip in clips[:32]])).permute(0, 3, 1, 2).float()
        latents = vae.encode(sample / 127.5 - 1.0).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def save_toy_vae(vae, path) -> None:
    from safetensors.torch import save_file

    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vae.config.items() if not k.startswith("_")}
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(path), metadata={"vae_config": json.dumps(config)})


def load_toy_vae(path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..configs import build_vae

    with safe_open(str(path), "pt") as handle:
        config = json.loads(handle.metadata()["vae_config"])
    vae = build_vae(config)
    vae.load_state_dict(load_file(str(path)))
    return vae.eval()
