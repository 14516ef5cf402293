"""``python -m lipsync_core init``: make a starting SayAnything model file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "Make a starting SayAnything model: from Stable Video Diffusion weights (--svd) or random at a size (--size)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="the .safetensors file to write (required unless --dry-run)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--svd",
        type=Path,
        metavar="PATH",
        help="single-file svd_xt.safetensors / svd_xt_1_1.safetensors (original keys)",
    )
    source.add_argument("--size", choices=("tiny", "full"), help="randomly initialised model of this size")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="storage precision (default: fp16 for --svd, as SVD ships; fp32 for --size)")
    parser.add_argument(
        "--vae",
        action="store_true",
        help="also store a VAE in the file: SVD's temporal VAE with --svd, a random one of the size with --size",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the freshly initialised parts")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the parameter counts as JSON without allocating weights"
    )


def main(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import parse_dtype, save_checkpoint
    from ..configs import ModelDefaults, SayAnythingConfig, build_vae
    from ..models import SayAnythingModel

    if args.svd is not None:
        from ..svd_import import detect_svd_size

        size = detect_svd_size(args.svd)
    else:
        size = args.size

    if args.dry_run:
        with torch.device("meta"):
            counts = SayAnythingModel(SayAnythingConfig.preset(size)).num_parameters()
            if args.vae:
                counts["vae"] = sum(p.numel() for p in build_vae(size).parameters())
        print(json.dumps({"size": size, "parameters": counts}, indent=2))
        return 0

    if args.output is None:
        print("init: -o/--output is required (or use --dry-run)", file=sys.stderr)
        return 2
    if args.output.exists() and not args.overwrite:
        print(f"init: {args.output} already exists; choose another name or pass --overwrite", file=sys.stderr)
        return 1
    dtype = parse_dtype(args.dtype or ("fp16" if args.svd is not None else "fp32"))
    if args.svd is not None:
        from ..svd_import import model_from_svd

        # Loaded straight into the storage precision: a full-size UNet in fp32 would need 6 GB more.
        model, vae = model_from_svd(args.svd, dtype=dtype, seed=args.seed, size=size)
        vae = vae if args.vae else None
    else:
        torch.manual_seed(args.seed)
        model = SayAnythingModel(SayAnythingConfig.preset(size))
        vae = build_vae(size) if args.vae else None
    path = save_checkpoint(args.output, model, vae=vae, dtype=dtype, overwrite=args.overwrite,
                           defaults=ModelDefaults.for_preset(size))
    print(json.dumps({"output": str(path), "size": size, "dtype": str(dtype).replace("torch.", ""),
                      "parameters": model.num_parameters(), "vae": vae is not None}, indent=2))
    return 0
