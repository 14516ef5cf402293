"""Mouth-motion control on the toy world.

``python -m benchmarks.motion_control train INIT SHARDS OUT [--steps N]``: a toy SayAnything given the
mouth-motion input (``unet.motion_channels = 2``, zero-initialised, so it starts as INIT exactly) and
fine-tuned on a toy run's shards (``SHARDS/train``) with condition dropout (audio 0.3, reference 0.1,
motion 0.3). INIT: a toy run's ``run/model.safetensors`` whose VAE made the shards' cached latents.

``python -m benchmarks.motion_control evaluate INIT OUT/model.safetensors SHARDS`` measures on the
held-out clips (``SHARDS/eval``) from pixels (``toy.measure.measure_opening``): the output following a
requested motion (the clip's own lips, and x1.5 gain), reenactment (another clip's lips, moved onto
this mouth, with silence as audio), and audio-only quality against INIT. Writes
``benchmarks/motion_control.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def with_motion_input(init: str):
    """INIT's model with two zero-initialised motion channels added to conv_in, and INIT's VAE."""
    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.models import add_motion_input

    base, vae = load_checkpoint(init, dtype=torch.float32)
    return (base if base.config.unet.motion_channels else add_motion_input(base)), vae  # or continue a fine-tune


def train_command(args) -> None:
    from lipsync_core.toy.run import ToyRunConfig
    from lipsync_core.training.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    model, vae = with_motion_input(args.init)
    toy = ToyRunConfig()
    started = time.time()
    config = TrainConfig(
        data=str(Path(args.shards) / "train"), output=args.output, num_frames=toy.num_frames,
        batch_size=toy.batch_size, max_steps=args.steps, learning_rate=args.learning_rate, lr_warmup_steps=20,
        p_mean=toy.p_mean, p_std=toy.p_std, audio_dropout=args.audio_dropout,
        reference_dropout=toy.reference_dropout, motion_dropout=args.motion_dropout, noise_aug_strength=0.0,
        embed_vae=True, seed=toy.seed, log_every=25, checkpoint_every=0, weight_decay=0.0,
        inference_defaults=toy.inference_defaults())

    def report(step: int, total: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.4f} ({time.time() - started:.0f} s)", flush=True)

    path = train(config, model=model, vae=vae, progress=report)
    print(f"saved {path} ({time.time() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train")
    train_parser.add_argument("init")
    train_parser.add_argument("shards")
    train_parser.add_argument("output")
    train_parser.add_argument("--steps", type=int, default=1200)
    train_parser.add_argument("--learning-rate", type=float, default=1e-3)
    train_parser.add_argument("--audio-dropout", type=float, default=0.3,
                              help="more than the toy run's 0.1: motion-only samples teach the motion alone")
    train_parser.add_argument("--motion-dropout", type=float, default=0.3)
    train_parser.add_argument("--threads", type=int, default=1)
    evaluate_parser = commands.add_parser("evaluate")
    evaluate_parser.add_argument("init")
    evaluate_parser.add_argument("model")
    evaluate_parser.add_argument("shards")
    evaluate_parser.add_argument("--clips", type=int, default=8)
    evaluate_parser.add_argument("--frames", type=int, default=64)
    evaluate_parser.add_argument("--threads", type=int, default=1)
    evaluate_parser.add_argument("--motion-guidance", type=float, default=None,
                                 help="the sampler's motion guidance scale (default: the model file's)")
    evaluate_parser.add_argument("--json", default=str(HERE / "motion_control.json"))
    args = parser.parse_args()
    if args.command == "train":
        train_command(args)
    else:
        evaluate_command(args)


def _lip_motion(clip: dict, window: slice, fps: float = 25.0):
    """A shard clip's own lips in a window as a MouthMotion, its rest shape from the whole clip (its
    silences: a window may never close the mouth)."""
    from lipsync_core.motion import MOUTH_POINTS, MouthMotion, estimate_rest

    points = (clip["landmarks"].numpy()[:, list(MOUTH_POINTS)] + 0.5) / clip["frames"].shape[1]
    return MouthMotion(points[window], fps, estimate_rest(points))


def evaluate_command(args) -> None:
    """Six runs per held-out clip, each measured from pixels with the toy ruler (see the module docstring)."""
    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.metrics import pearson
    from lipsync_core.motion import edit_motion, render_motion, retarget
    from lipsync_core.pipeline import SayAnythingPipeline
    from lipsync_core.plan import SamplingPlan
    from lipsync_core.toy.evaluate import opening_figures
    from lipsync_core.toy.measure import measure_opening, measure_width
    from lipsync_core.toy.run import ToyRunConfig
    from lipsync_core.training.shards import ShardIndex, read_clip

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.time()
    toy = ToyRunConfig()
    base, base_vae = load_checkpoint(args.init)
    model, vae = load_checkpoint(args.model)
    guidance = model.defaults.motion_guidance if args.motion_guidance is None else args.motion_guidance
    entries = ShardIndex.scan(Path(args.shards) / "eval").entries[: args.clips]
    clips = [read_clip(path, clip) for path, clip, _, _ in entries]
    count = min([args.frames] + [len(c["frames"]) for c in clips])
    offsets = [int(np.random.default_rng([toy.seed, n]).integers(0, len(c["frames"]) - count + 1))
               for n, c in enumerate(clips)]
    runs = {name: [] for name in ("base_audio", "audio", "motion", "motion_audio", "gain", "reenact", "wide",
                                  "narrow")}
    widths = {name: [] for name in ("motion", "wide", "narrow")}
    truth, silent, requested, gained, driving = [], [], [], [], []
    for number, clip in enumerate(clips):
        window = slice(offsets[number], offsets[number] + count)
        partner = (number + 1) % len(clips)
        other_window = slice(offsets[partner], offsets[partner] + count)
        crop = clip["frames"].shape[1]
        frames = clip["frames"][window].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        mask = clip["mask"][window].float()[:, None] / 255.0
        far = 0 if offsets[number] > len(clip["frames"]) - (offsets[number] + count) else len(clip["frames"]) - 1
        reference = clip["frames"][far].permute(2, 0, 1).float()[None] / 127.5 - 1.0
        landmarks = clip["landmarks"][window].numpy()
        own = _lip_motion(clip, window)
        louder = edit_motion(own, gain=1.5)
        moved = retarget(_lip_motion(clips[partner], other_window), own.rest)
        latent = crop // model.config.id_guider.latent_scale_factor
        audio = clip["whisper"][window].float()
        silence = torch.zeros_like(audio)  # the null audio condition: motion alone drives the mouth
        cases = [("base_audio", base, base_vae, audio, None), ("audio", model, vae, audio, None),
                 ("motion", model, vae, silence, own), ("motion_audio", model, vae, audio, own),
                 ("gain", model, vae, silence, louder), ("reenact", model, vae, silence, moved),
                 ("wide", model, vae, silence, edit_motion(own, width_bias=0.15)),
                 ("narrow", model, vae, silence, edit_motion(own, width_bias=-0.15))]
        opened = own.opening() > np.quantile(own.opening(), 0.6)  # the open frames: width shows there
        for name, network, network_vae, features, motion in cases:
            condition = None if motion is None else torch.from_numpy(render_motion(motion, latent))
            plan = SamplingPlan(steps=toy.sample_steps, reference_guidance=toy.reference_guidance,
                                audio_guidance=toy.audio_guidance, motion_guidance=guidance, window=toy.num_frames,
                                overlap=toy.num_frames // 4, noise_aug_strength=0.0, seed=toy.seed + number)
            result = SayAnythingPipeline(network, network_vae)(frames, mask, features, reference=reference, plan=plan,
                                                               motion=condition)
            pixels = ((result.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            runs[name].append(measure_opening(pixels, landmarks))
            if name in widths:
                widths[name].append(float(measure_width(pixels, landmarks)[opened].mean()))
        truth.append(clip["opening"][window].numpy())
        silent.append(clip["silent"][window].numpy().astype(bool))
        requested.append(own.opening())
        gained.append(louder.opening())
        driving.append(moved.opening())
        print(f"clip {number + 1}/{len(clips)} ({time.time() - started:.0f} s)", flush=True)

    def pooled(measured, target):
        return round(pearson(np.concatenate([m - m.mean() for m in measured]),
                             np.concatenate([t - t.mean() for t in target])), 4)

    # None where the motion alone left the mouth still (nothing to scale)
    amplitude = [np.std(g) / np.std(m) if np.std(m) > 1e-3 else None for g, m in zip(runs["gain"], runs["motion"])]
    results = {
        "audio_only_base": opening_figures(runs["base_audio"], truth, silent),
        "audio_only_motion_model": opening_figures(runs["audio"], truth, silent),
        "follows_requested_motion_r": pooled(runs["motion"], requested),
        "follows_requested_motion_with_audio_r": pooled(runs["motion_audio"], requested),
        "gain_1_5_follows_r": pooled(runs["gain"], gained),
        "gain_1_5_amplitude_ratio": round(float(np.mean([a for a in amplitude if a is not None])), 3)
        if any(a is not None for a in amplitude) else None,
        "gain_1_5_amplitude_ratio_per_clip": [None if a is None else round(float(a), 3) for a in amplitude],
        "reenactment_r": pooled(runs["reenact"], driving),
        # Width bias +-0.15 of the rest width: the open mouth's measured width against the unedited motion's.
        "width_bias_plus_wider_share": float(np.mean(np.greater(widths["wide"], widths["motion"]))),
        "width_bias_minus_narrower_share": float(np.mean(np.less(widths["narrow"], widths["motion"]))),
        "width_bias_plus_ratio": round(float(np.mean(widths["wide"]) / np.mean(widths["motion"])), 3),
        "width_bias_minus_ratio": round(float(np.mean(widths["narrow"]) / np.mean(widths["motion"])), 3),
        "reenactment_vs_own_audio_truth_r": pooled(runs["reenact"], truth),
        "clips": len(clips),
        "frames_per_clip": count,
        "motion_guidance": guidance,
    }
    record = {
        "what": "Mouth-motion control on toy world held-out clips, measured from pixels (toy ruler)",
        "results": results,
        "init": str(args.init), "model": str(args.model),
        "machine": {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_before": [round(x, 2) for x in load_before],
                    "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
        "wall_seconds": round(time.time() - started, 1),
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
