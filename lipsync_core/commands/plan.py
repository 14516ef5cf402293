"""``python -m lipsync_core plan``: the memory plan of a run on a card of a given size (``lipsync_core.memory``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("Predict a run's peak device memory per phase on a card of --vram GiB and the settings that fit it "
        "(decode chunk, feed-forward chunks, window batch); prints JSON, exits 0 whether or not it fits.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..configs import PRESETS
    from ..speed import SPEEDS

    parser.add_argument("--vram", type=float, required=True, help="the card's memory in GiB (e.g. 8, 12, 24)")
    parser.add_argument("--size", choices=PRESETS, default="full", help="model size preset")
    parser.add_argument("--speed", choices=SPEEDS, default="quality")
    parser.add_argument("--crop-size", type=int, help="face crop in pixels (default: the size's own, 512 at full)")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--motion-guidance", type=float, default=1.0,
                        help="with a mouth motion, guidance on it (above 1: one more guidance branch)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the plan here")


def main(args: argparse.Namespace) -> int:
    import torch

    from ..configs import VAE_PRESETS, ModelDefaults, SayAnythingConfig, build_vae
    from ..memory import GIB, RunShape, fit
    from ..models import SayAnythingModel
    from ..pipeline import guidance_branches
    from ..plan import SamplerOptions

    value_bytes = 4 if args.precision == "fp32" else 2
    with torch.device("meta"):  # shapes only: nothing is allocated
        config = SayAnythingConfig.preset(args.size)
        parameters = sum(p.numel() for module in (SayAnythingModel(config), build_vae(args.size))
                         for p in module.parameters())
    defaults = ModelDefaults.for_preset(args.size)
    crop_size = args.crop_size or defaults.crop_size
    plan = SamplerOptions(speed=args.speed, motion_guidance=args.motion_guidance).resolve(defaults)
    factor = 2 ** (len(VAE_PRESETS[args.size]["block_out_channels"]) - 1)
    branches = len(guidance_branches(plan.reference_guidance, plan.audio_guidance, plan.motion_guidance))
    shape = RunShape(parameters * value_bytes, crop_size // factor, branches, value_bytes, args.size)
    _fitted, prediction = fit(shape, plan, int(args.vram * GIB))
    report = prediction.to_json()
    report["settings"].update(speed=args.speed, crop_size=crop_size, precision=args.precision, size=args.size)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
