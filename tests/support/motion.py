"""A SayAnything model with a mouth-motion input for the tests, whatever the shipped demo model is."""

from __future__ import annotations

from pathlib import Path

import torch


def has_motion_input(path: Path) -> bool:
    from lipsync_core.checkpoint import read_checkpoint_metadata
    from lipsync_core.configs import SayAnythingConfig

    config = SayAnythingConfig.from_json(read_checkpoint_metadata(path)["config"])
    return bool(config.unet.motion_channels)


def motion_model(source: Path, seed: int = 0) -> Path:
    """``source`` itself when it has a mouth-motion input (the shipped demo model once it is trained with
    one); otherwise a copy beside it given the input by ``models.add_motion_input``, with random motion
    weights (scaled like the other inputs') standing in for trained ones, so a motion changes the frames."""
    from lipsync_core.checkpoint import load_checkpoint, save_checkpoint
    from lipsync_core.models import add_motion_input

    if has_motion_input(source):
        return source
    target = Path(source).with_name(f"{Path(source).stem}_motion_test.safetensors")
    if target.is_file():
        return target
    base, vae = load_checkpoint(source)
    model = add_motion_input(base)
    channels = model.config.unet.motion_channels
    weight = model.unet.conv_in.weight
    with torch.no_grad():
        noise = torch.randn(weight[:, -channels:].shape, generator=torch.Generator().manual_seed(seed))
        weight[:, -channels:] = noise * weight[:, :-channels].std()
    return save_checkpoint(target, model, vae=vae)


def plain_model(source: Path, target: Path) -> Path:
    """``source`` without a mouth-motion input (its motion weights dropped, the rest as they are): a model
    that must refuse a motion, whatever the shipped one has."""
    import dataclasses

    from lipsync_core.checkpoint import load_checkpoint, save_checkpoint
    from lipsync_core.models import SayAnythingModel

    base, vae = load_checkpoint(source)
    channels = base.config.unet.motion_channels
    unet = dataclasses.replace(base.config.unet, in_channels=base.config.unet.in_channels - channels,
                               motion_channels=0)
    model = SayAnythingModel(dataclasses.replace(base.config, unet=unet))
    state = base.state_dict()
    if channels:
        state["unet.conv_in.weight"] = state["unet.conv_in.weight"][:, :-channels]
    model.load_state_dict(state)
    return save_checkpoint(target, model, vae=vae, defaults=base.defaults, overwrite=True)
