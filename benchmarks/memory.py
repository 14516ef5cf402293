"""Measure the memory plan's activation costs (``lipsync_core.memory.COSTS``) with fake tensors.

Usage: ``python -m benchmarks.memory [--size full] [--json benchmarks/memory.json]``

No memory is allocated and nothing is computed: the full-size model is built from fake tensors and its UNet,
VAE decode and VAE encode calls are traced by torch's memory tracker (about ten minutes on a 2-core CPU). The
figures go into ``COSTS``; ``tests/core/test_memory.py`` checks that the two stay in step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lipsync_core.memory import measure_costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--latent-size", type=int, default=64, help="latent side (512 px crops: 64)")
    parser.add_argument("--frames", type=int, default=14, help="frames per UNet call (a window)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    started = time.time()
    figures = measure_costs(args.size, args.latent_size, args.frames)
    figures["seconds"] = round(time.time() - started, 1)
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
