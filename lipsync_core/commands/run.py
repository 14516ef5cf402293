"""``python -m lipsync_core run``: lip-sync a video (or a still image) to speech without ComfyUI.

The Lip Sync Video node's run (``streaming.lipsync_file``), with the sampler's options as flags.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..audio.fit import FIT_MODES
from ..face.mask import UPPER_EDGES
from ..plan import FaceOptions, SamplerOptions, Stage, StreamSettings
from ..speed import SCHEDULES, SPEEDS

HELP = "lip-sync a video or a still image to speech (the ComfyUI workflow's pipeline, without ComfyUI)"


AUTO = "(default: the model file's own)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sampler, stream = SamplerOptions(), StreamSettings()
    parser.add_argument("--video", required=True, help="video file, or an image to make a talking still")
    parser.add_argument("--audio", required=True, help="speech: any audio or video file")
    parser.add_argument("--model", required=True,
                        help="SayAnything checkpoint (.safetensors), or MuseTalk 1.5's unet.pth / its converted file")
    parser.add_argument(
        "--svd", "--vae", dest="svd",
        help="the VAE: for SayAnything the SVD single-file checkpoint whose VAE to use (svd_xt.safetensors; not "
        "needed when the file carries its VAE), for MuseTalk vae-ft-mse-840000-ema-pruned.safetensors",
    )
    parser.add_argument(
        "--whisper",
        required=True,
        help="Whisper model: transformers or CTranslate2 folder, or openai .pt (models/whisper/...)",
    )
    parser.add_argument("-o", "--output", required=True, help="output .mp4 (an existing file is not overwritten)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--fps", type=float, help="frame rate: required for an image, default the video's own")
    parser.add_argument("--audio-start", type=float, default=0.0, help="seconds to skip at the start of the audio")
    parser.add_argument("--audio-duration", type=float, help="seconds of audio to use (default: all)")
    parser.add_argument("--fit", default="loop", choices=list(FIT_MODES), help="when lengths differ (the Fit node)")
    parser.add_argument("--steps", type=int, help=f"denoising steps {AUTO}")
    parser.add_argument("--seed", type=int, default=sampler.seed)
    parser.add_argument("--reference-guidance", type=float, help=f"identity guidance {AUTO}")
    parser.add_argument("--audio-guidance", type=float,
                        help=f"audio guidance {AUTO}; with --style-video and no --motion-video: style_audio_guidance")
    parser.add_argument("--motion-guidance", type=float,
                        help=f"guidance on the mouth motion (--motion-video, or a --style-video's) {AUTO}")
    parser.add_argument("--window", type=int, help=f"frames denoised together {AUTO}")
    parser.add_argument("--overlap", type=int, help=f"frames shared by neighbouring windows {AUTO}")
    parser.add_argument("--noise-aug", type=float, help=f"canvas noise augmentation {AUTO}")
    parser.add_argument(
        "--decode-chunk",
        type=int,
        help="frames cropped, VAE-encoded and decoded at once (default: 8, fewer where the GPU's memory asks)",
    )
    parser.add_argument("--speed", default=sampler.speed, choices=list(SPEEDS),
                        help="quality (the full sampler), balanced or fast (see BENCHMARKS.md, Fast sampling); "
                             "the flags below override the preset")
    parser.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="sigmas where the guidance branches run (default: the preset's)")
    parser.add_argument("--deep-cache", type=int, help="deep UNet blocks every N steps (default: the preset's)")
    parser.add_argument("--schedule", choices=list(SCHEDULES), help="noise levels (default: the preset's)")
    parser.add_argument("--window-batch", type=int, help="windows per batched forward (default: the preset's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (first run compiles)")
    parser.add_argument("--ff-chunks", type=int,
                        help="the UNet's feed-forwards in this many chunks (less memory; default: 1, more where the "
                             "GPU's memory asks)")
    parser.add_argument("--crop-size", type=int, help=f"side of the aligned face crop {AUTO}")
    parser.add_argument("--upper-edge", choices=list(UPPER_EDGES), help=f"mask top {AUTO}")
    parser.add_argument("--expand", type=float, help=f"mask growth, fraction of the face size {AUTO}")
    parser.add_argument("--feather", type=float, help=f"mask edge softness, fraction of the face size {AUTO}")
    parser.add_argument("--mask-hold", type=float, help=f"seconds the mask holds the jaw's outline {AUTO}")
    parser.add_argument("--face", default="largest", help="largest, or index (with --face-index)")
    parser.add_argument("--face-index", type=int, default=0)
    parser.add_argument("--reference-frame", type=int, default=0, help="which frame's face is the identity reference")
    parser.add_argument("--crf", type=float, default=stream.crf, help="x264 quality (lower is better; 16 ~ a master)")
    parser.add_argument("--preset", default=stream.preset, help="x264 speed preset (ultrafast .. veryslow)")
    parser.add_argument(
        "--spill-mb",
        type=float,
        default=stream.spill_bytes / 2**20,
        help="per-video buffers larger than this go to a temporary file (MB)",
    )
    parser.add_argument("--temp-dir", help="where such buffers go (default: the system's temporary folder)")
    parser.add_argument(
        "--motion-video",
        help="driving video whose lip motion the output copies, moved onto this face's mouth (needs a model with "
        "a mouth-motion input; resampled to the output's fps, its length must match the output's)",
    )
    parser.add_argument("--motion-gain", type=float, default=1.0, help="articulation of --motion-video (1.5 = +50%%)")
    parser.add_argument(
        "--style-video",
        help="reference clip of the speaker talking, with its own sound: the lips move the way this person speaks "
        "(needs a model with a speaking-style input; its stretch with the most speech is used)",
    )
    parser.add_argument("--style-strength", type=float, default=1.0,
                        help="weight of --style-video's speaking style (1: as trained, 0: none)")
    parser.add_argument("--musetalk-reference", choices=("reference_frame", "own_frame"),
                        help="MuseTalk: one reference frame (default) or each frame's own crop (upstream's; it shows "
                        "the source's mouth)")
    parser.add_argument("--musetalk-mask", choices=("held", "lower_half"),
                        help="MuseTalk: the held face mask within the lower half (default) or the whole lower half")
    parser.add_argument("--box-smoothing", type=float,
                        help="MuseTalk: Gaussian smoothing of the face box over frames (default 1.5; 0 = upstream's)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class ConsoleProgress:
    """One tqdm bar per stage of the run (tracking, audio features, canvas, denoising, writing)."""

    def __init__(self):
        self.stage, self.bar = None, None

    def __call__(self, stage: Stage, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=total or None, desc=Stage(stage).value, unit="",
                                               dynamic_ncols=True)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(args: argparse.Namespace) -> int:
    from .. import inference
    from ..audio import read_audio_channels
    from ..checkpoint import load, resolve_dtype
    from ..compat import vae_dtype
    from ..streaming import lipsync_file

    if os.path.exists(args.output) and not args.overwrite:
        print(f"error: {args.output} exists; choose another name or pass --overwrite", file=sys.stderr)
        return 2
    progress = ConsoleProgress()
    try:
        from ..media import probe_video

        if probe_video(args.video).is_image and not args.fps:  # before any model is loaded
            raise ValueError(f"{args.video} is an image: give the frame rate with --fps (e.g. --fps 25)")
        if args.style_video:
            probe_video(args.style_video)  # a missing or unreadable reference fails before the models load
        speech = inference.load_audio(args.audio, start=args.audio_start, duration=args.audio_duration)
        channels, rate = read_audio_channels(args.audio)
        first = round(args.audio_start * rate)
        last = None if args.audio_duration is None else first + round(args.audio_duration * rate)
        options = SamplerOptions(
            steps=args.steps,
            seed=args.seed,
            reference_guidance=args.reference_guidance,
            audio_guidance=args.audio_guidance,
            motion_guidance=args.motion_guidance,
            style_strength=args.style_strength,
            window=args.window,
            overlap=args.overlap,
            decode_chunk=args.decode_chunk,
            noise_aug_strength=args.noise_aug,
            speed=args.speed,
            guidance_interval=args.guidance_interval,
            deep_cache=args.deep_cache,
            schedule=args.schedule,
            window_batch=args.window_batch,
            compile=args.compile,
            ff_chunks=args.ff_chunks,
        )
        face = FaceOptions(
            face=args.face,
            face_index=args.face_index,
            upper_edge=args.upper_edge,
            expand=args.expand,
            feather=args.feather,
            mask_hold=args.mask_hold,
            crop_size=args.crop_size,
        )
        motion = None
        if args.motion_video:
            from ..motion import edit_motion, read_mouth_motion

            driving = read_mouth_motion(args.motion_video, args.face, args.face_index)
            motion = edit_motion(driving, gain=args.motion_gain)
        dtype = resolve_dtype(args.precision, args.device)
        loaded = load(args.model, vae=args.svd, dtype=dtype, device=args.device)
        loaded.vae.to(vae_dtype(args.device, dtype))
        choices = {"reference": args.musetalk_reference, "mask": args.musetalk_mask,
                   "box_smoothing": args.box_smoothing}
        if any(value is not None for value in choices.values()):
            if not hasattr(loaded, "with_choices"):
                raise ValueError(f"--musetalk-reference, --musetalk-mask and --box-smoothing are MuseTalk's; "
                                 f"{args.model} is a {loaded.family} model")
            loaded = loaded.with_choices(**choices)
        whisper = inference.load_whisper(args.whisper, device=args.device)
        style = None
        if args.style_video:
            from ..style import read_style_reference

            style = read_style_reference(args.style_video, loaded, whisper, args.face, args.face_index,
                                         progress=lambda done: progress(Stage.STYLE_REFERENCE, done, 0))
        settings = StreamSettings(
            crf=args.crf, preset=args.preset, spill_bytes=int(args.spill_mb * 2**20), spill_dir=args.temp_dir
        )
        path = lipsync_file(
            args.video,
            speech,
            args.output,
            loaded,
            whisper,
            options,
            face,
            fit_mode=args.fit,
            fps=args.fps,
            reference_index=args.reference_frame,
            mux_audio=(channels[:, first:last], rate),
            settings=settings,
            device=args.device,
            progress=progress,
            motion=motion,
            style=style,
        )
    except (ValueError, FileNotFoundError) as error:
        progress.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    progress.close()
    print(path)
    return 0
