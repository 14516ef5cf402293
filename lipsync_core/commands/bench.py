"""``python -m lipsync_core bench``: time one denoising step against stock diffusers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "Time one denoising step (all guidance branches) and its peak memory, against the stock diffusers SVD UNet."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--frames", type=int, default=8, help="frames per window")
    parser.add_argument(
        "--resolution", type=int, default=128, help="crop size in pixels (latents are this / the VAE factor)"
    )
    parser.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the two variants this many times, keep each one's best"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in the measuring processes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report here")


def main(args: argparse.Namespace) -> int:
    from ..bench import run_benchmark

    report = run_benchmark(
        size=args.size, device=args.device, frames=args.frames, resolution=args.resolution,
        dtype=args.dtype, repeats=args.repeats, warmup=args.warmup, rounds=args.rounds, threads=args.threads,
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0
