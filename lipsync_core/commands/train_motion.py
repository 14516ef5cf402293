"""``python -m lipsync_core train-motion``: train the Mouth Motion from Audio model on `prep` shards."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = ("Train the small Mouth Motion from Audio model (Whisper features -> lip landmarks) on the shards from "
        "`prep` or `toy`; minutes on a CPU core. Writes <output>/mouth_motion.safetensors.")

_HELP = {
    "data": "folder of training shards (from `python -m lipsync_core prep`, or a toy run's shards/train)",
    "output": "run folder: mouth_motion.safetensors, log.jsonl, results.json (with --eval-data)",
    "eval_data": "held-out shards to report how the predicted lip opening follows the truth (Pearson r)",
    "num_frames": "frames per training window",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.config import MotionTrainConfig
    from .train import add_dataclass_arguments

    add_dataclass_arguments(parser, MotionTrainConfig, _HELP)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def main(args: argparse.Namespace) -> int:
    import torch

    from ..training.config import MotionTrainConfig
    from ..training.motion import train_mouth_motion

    if args.threads:
        torch.set_num_threads(args.threads)
    config = MotionTrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MotionTrainConfig)})
    path = train_mouth_motion(config, progress=lambda step, total, loss: print(
        f"step {step}/{total} loss {loss:.5f}", flush=True) if step % 100 == 0 or step == total else None)
    print(f"saved {path}")
    results = path.parent / "results.json"
    if results.is_file():
        print(json.dumps(json.loads(results.read_text()), indent=2))
    return 0
