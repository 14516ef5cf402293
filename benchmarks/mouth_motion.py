"""Mouth Motion from Audio on the toy world: ``python -m benchmarks.mouth_motion SHARDS [--output DIR]``.

SHARDS is a toy run's shard folder (``python -m lipsync_core toy OUT`` writes ``OUT/shards/train`` and
``OUT/shards/eval``: world v2, real espeak-ng speech, Whisper tiny.en features as the toy run gets them).
Trains the model with ``train-motion``'s defaults on the train split and measures, on the held-out
identities and sentences of the eval split, the Pearson r between the predicted lip opening and the
world's true opening. Writes ``benchmarks/mouth_motion.json`` (with the machine and its load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    import torch

    from lipsync_core.training.motion import MotionTrainConfig, train_mouth_motion

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="a toy run's shards folder (with train/ and eval/)")
    parser.add_argument("--output", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "mouth_motion.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shards = Path(args.shards)
    output = args.output or tempfile.mkdtemp(prefix="mouth_motion_")
    load_before = os.getloadavg()
    started = time.time()
    config = MotionTrainConfig(data=str(shards / "train"), output=output, eval_data=str(shards / "eval"))

    def report(step: int, total: int, loss: float) -> None:
        if step % 100 == 0:
            print(f"step {step}/{total} loss {loss:.5f} ({time.time() - started:.0f} s)", flush=True)

    train_mouth_motion(config, progress=report)
    results = json.loads((Path(output) / "results.json").read_text())
    stamp = shards / "complete.json"
    record = {
        "what": "Mouth Motion from Audio on toy world v2: predicted lip opening vs the true opening, held-out "
        "identities and sentences (eval split)",
        "results": results,
        "train_config": {k: v for k, v in json.loads((Path(output) / "motion_config.json").read_text()).items()
                         if k not in ("data", "output", "eval_data")},
        "world": json.loads(stamp.read_text()).get("world") if stamp.is_file() else None,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_before": [round(x, 2) for x in load_before],
                    "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        "wall_seconds": round(time.time() - started, 1),
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
