"""``python -m lipsync_core run``: lip-sync a video (or a still image) to speech without ComfyUI.

The same steps as the ComfyUI nodes (lipsync_core.inference), with the sampler's options as flags.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HELP = "lip-sync a video or a still image to speech (the ComfyUI workflow's pipeline, without ComfyUI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference import FaceOptions, SamplerOptions

    sampler, face = SamplerOptions(), FaceOptions()
    parser.add_argument("--video", required=True, help="video file, or an image to make a talking still")
    parser.add_argument("--audio", required=True, help="speech: any audio or video file")
    parser.add_argument("--model", required=True, help="SayAnything checkpoint (.safetensors)")
    parser.add_argument("--svd", help="SVD single-file checkpoint whose VAE to use (svd_xt.safetensors); "
                        "not needed when the SayAnything file carries its VAE")
    parser.add_argument("--whisper", required=True, help="transformers Whisper folder (e.g. models/whisper/whisper-tiny)")
    parser.add_argument("-o", "--output", required=True, help="output .mp4 (an existing file is not overwritten)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--fps", type=float, help="frame rate: required for an image, default the video's own")
    parser.add_argument("--audio-start", type=float, default=0.0, help="seconds to skip at the start of the audio")
    parser.add_argument("--audio-duration", type=float, help="seconds of audio to use (default: all)")
    parser.add_argument("--fit", default="loop", help="cut, pad_silence, loop or pingpong (see the Fit node)")
    parser.add_argument("--steps", type=int, default=sampler.steps)
    parser.add_argument("--seed", type=int, default=sampler.seed)
    parser.add_argument("--reference-guidance", type=float, default=sampler.reference_guidance)
    parser.add_argument("--audio-guidance", type=float, default=sampler.audio_guidance)
    parser.add_argument("--window", type=int, default=sampler.window)
    parser.add_argument("--overlap", type=int, default=sampler.overlap)
    parser.add_argument("--decode-chunk", type=int, default=sampler.decode_chunk)
    parser.add_argument("--crop-size", type=int, default=face.crop_size)
    parser.add_argument("--upper-edge", default=face.upper_edge, help="mask top: mouth, nose or eyes")
    parser.add_argument("--expand", type=float, default=face.expand)
    parser.add_argument("--feather", type=float, default=face.feather)
    parser.add_argument("--face", default=face.face, help="largest, or index (with --face-index)")
    parser.add_argument("--face-index", type=int, default=face.face_index)
    parser.add_argument("--reference-frame", type=int, default=0, help="which frame's face is the identity reference")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


class _ProgressBar:
    """One line on stderr: ``step 3/10 [#####.....] 12.3 s``."""

    def __init__(self, label: str):
        self.label = label
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.monotonic() - self.started
        sys.stderr.write(f"\r{self.label} {done}/{total} [{'#' * filled}{'.' * (width - filled)}] {elapsed:.1f} s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def main(args: argparse.Namespace) -> int:
    from .. import inference

    if os.path.exists(args.output) and not args.overwrite:
        print(f"error: {args.output} exists; choose another name or pass --overwrite", file=sys.stderr)
        return 2
    try:
        frames, video_fps = inference.read_frames(args.video)
        fps = args.fps or video_fps
        if fps is None:
            raise ValueError(f"{args.video} is an image: give the frame rate with --fps (e.g. --fps 25)")
        audio = inference.load_audio(args.audio, start=args.audio_start, duration=args.audio_duration)
        options = inference.SamplerOptions(
            steps=args.steps, seed=args.seed, reference_guidance=args.reference_guidance,
            audio_guidance=args.audio_guidance, window=args.window, overlap=args.overlap,
            decode_chunk=args.decode_chunk,
        )
        face = inference.FaceOptions(face=args.face, face_index=args.face_index, upper_edge=args.upper_edge,
                                     expand=args.expand, feather=args.feather, crop_size=args.crop_size)
        dtype = _dtype(args.precision, args.device)
        loaded = inference.load_model(args.model, svd_path=args.svd, dtype=dtype, device=args.device)
        whisper = inference.load_whisper(args.whisper, device=args.device)
        result, fitted_audio, _mask = inference.lipsync(
            frames, fps, audio, loaded, whisper, options, face_options=face, fit_mode=args.fit,
            reference_index=args.reference_frame, device=args.device, callback=_ProgressBar("sampling step"),
        )
        path = inference.write_video(args.output, result, fps, fitted_audio)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
