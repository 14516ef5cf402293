"""``python -m lipsync_core prep``: talking-head videos -> training shards."""

from __future__ import annotations

import argparse

from ..configs import UPPER_EDGES, ModelDefaults

DEFAULTS = ModelDefaults()

HELP = ("Prepare training shards from a folder of talking-head videos: aligned face crops, masks, landmark "
        "tracks, Whisper features (optionally VAE latents), fixed-length clips. Resumable; bad videos are "
        "skipped and listed in OUTPUT/prep_report.json.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="folder of videos (mp4, mov, mkv, webm, avi, m4v)")
    parser.add_argument("output", help="folder for the shards and prep_report.json")
    parser.add_argument("--whisper", required=True, help="transformers Whisper folder (tiny/tiny.en for the presets)")
    parser.add_argument("--fps", type=float, default=25.0, help="training fps; every source fps is resampled to it")
    parser.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size, help="aligned crop size in pixels")
    parser.add_argument("--clip-frames", type=int, default=42, help="frames per clip (a few model windows)")
    parser.add_argument(
        "--clip-stride", type=int, default=None, help="frames between clip starts (default: no overlap)"
    )
    parser.add_argument("--vae", default=None,
                        help="cache VAE latents: a SayAnything checkpoint with a VAE, or a single-file SVD")
    parser.add_argument("--upper-edge", default=DEFAULTS.upper_edge, choices=UPPER_EDGES, help="mask upper edge")
    parser.add_argument("--mask-hold", type=float, default=DEFAULTS.mask_hold,
                        help="seconds the crop mask holds the jaw's outline (stops the source mouth leaking)")
    parser.add_argument("--workers", type=int, default=1, help="videos processed in parallel (processes)")
    parser.add_argument("--backend", default="auto", help="landmark backend (auto, face_mesh, tasks)")


def main(args: argparse.Namespace) -> int:
    from ..training.prep import PrepConfig, prepare_dataset

    config = PrepConfig(input=args.input, output=args.output, whisper=args.whisper, fps=args.fps,
                        crop_size=args.crop_size, clip_frames=args.clip_frames, clip_stride=args.clip_stride,
                        vae=args.vae, upper_edge=args.upper_edge, mask_hold=args.mask_hold, workers=args.workers,
                        backend=args.backend)
    report = prepare_dataset(config)
    clips = sum(entry["clips"] for entry in report["prepared"])
    print(f"{len(report['prepared'])} videos prepared ({clips} clips), {len(report['skipped'])} skipped")
    for entry in report["skipped"]:
        print(f"  skipped {entry['video']}: {entry['error']}")
    return 0
