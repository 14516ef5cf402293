"""Models for the speaking-style tests: one with a style input whose encoder steers the output,
and one without a style input.

The shipped toy model's style acts through the mouth motion its encoder predicts (``style.style_condition``),
while its UNet hardly uses the style tokens (BENCHMARKS.md, Toy world v3). ``write_style_model`` keeps the
shipped weights and makes the token layer random, so a style steers the output through both paths, which
the node and workflow tests need to see it arrive; ``tokens=False`` silences the tokens to test the motion
path alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

STYLE_FRAMES = 48  # style_reference_frames of the toy run (ToyRunConfig.style_frames)


def _shipped():
    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.toy.demo import DEMO_MODEL

    return load_checkpoint(DEMO_MODEL)


def _rebuilt(base, style):
    """``base``'s weights in a model whose config has ``style`` (None: no style input)."""
    from lipsync_core.models import SayAnythingModel

    model = SayAnythingModel(dataclasses.replace(base.config, style=style))
    missing, _unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert all(key.startswith("style_encoder.") for key in missing), missing
    return model.eval()


def write_style_model(path: Path, seed: int = 0, tokens: bool = True) -> Path:
    """The shipped toy model with the toy config's style encoder and ``STYLE_FRAMES`` reference frames; its
    token layer made random so a style steers the output through the tokens too, or with ``tokens`` False
    zero, so a style acts only through the mouth motion it predicts."""
    from lipsync_core.checkpoint import save_checkpoint
    from lipsync_core.toy.run import toy_model_config

    base, vae = _shipped()
    torch.manual_seed(seed)
    model = _rebuilt(base, base.config.style or toy_model_config().style)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer = model.style_encoder.to_tokens
        scale = 0.5 if tokens else 0.0
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * scale)
    defaults = base.defaults.replace(style_reference_frames=STYLE_FRAMES)
    return save_checkpoint(path, model, vae=vae, defaults=defaults, overwrite=True)


def write_plain_model(path: Path) -> Path:
    """The shipped toy model without a speaking-style input (whatever the shipped file has)."""
    from lipsync_core.checkpoint import save_checkpoint

    base, vae = _shipped()
    return save_checkpoint(path, _rebuilt(base, None), vae=vae,
                           defaults=base.defaults.replace(style_reference_frames=0), overwrite=True)
