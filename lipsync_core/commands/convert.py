"""``python -m lipsync_core convert``: MuseTalk 1.5's upstream ``unet.pth`` -> one ``.safetensors`` for the pack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("Convert MuseTalk 1.5's unet.pth (+ musetalk.json) into one .safetensors with the family and its inference "
        "defaults in the metadata (the pack also loads unet.pth directly).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("unet", type=Path, help="upstream's musetalkV15/unet.pth (a plain state dict)")
    parser.add_argument("--config", type=Path,
                        help="its musetalk.json (default: the one beside the .pth, else the published config)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"),
                        help="storage precision (default: the file's, fp32; fp16 halves the 3.4 GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")


def main(args: argparse.Namespace) -> int:
    from ..checkpoint import parse_dtype
    from ..musetalk import convert

    if args.output.exists() and not args.overwrite:
        print(f"convert: {args.output} already exists; choose another name or pass --overwrite", file=sys.stderr)
        return 1
    try:
        path = convert(args.unet, args.output, args.config, overwrite=args.overwrite, dtype=parse_dtype(args.dtype))
    except ValueError as error:  # a file that is not MuseTalk's UNet: the message names it and what to use
        print(f"convert: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"output": str(path), "family": "MuseTalk 1.5", "bytes": path.stat().st_size}, indent=2))
    return 0
