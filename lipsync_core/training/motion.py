"""Training the Mouth Motion from Audio model on the shards `prep` (or the toy world) writes (ours).

Per clip the shards already hold what it needs: ``{j}.landmarks`` (478 points in crop pixels, NaN
without a face), ``{j}.whisper`` (per-frame features) and the crop size in the clip info. The target
is the 40 lip points' displacement from the clip's own resting mouth (``motion.estimate_rest``) in
units of that mouth's width; the loss is their mean squared error over frames with a face. Windows of
``num_frames`` frames (stride half of it); randomness from (seed, step) only. Runs on accelerate
(CPU, one GPU, or ``accelerate launch``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..metrics import pearson
from ..models.mouth_motion import AudioToMouthMotion, MouthMotionConfig, save_mouth_motion_model
from ..motion import MOUTH_POINTS, MouthMotion, estimate_rest, in_rest_widths, mouth_opening
from .config import MotionTrainConfig
from .shards import ShardIndex, read_clip


@dataclass
class MotionClip:
    """One shard clip's training target (in memory; Whisper features stay in the shard)."""

    path: str
    index: int
    fps: float
    points: np.ndarray  # [T, 40, 2] crop units, NaN where no face
    rest: np.ndarray  # [40, 2]
    target: np.ndarray  # [T, 40, 2] displacement in rest widths (0 where no face)
    valid: np.ndarray  # bool [T]
    info: dict


def load_motion_clips(folder: str | Path) -> list[MotionClip]:
    """The lip targets of every clip in a shard folder (clips without any face are skipped)."""
    clips = []
    for path, index, _, info in ShardIndex.scan(folder).entries:
        if "crop_size" not in info:
            raise ValueError(f"{path} clip {index}: the clip info lacks crop_size (shards from `prep` record it).")
        landmarks = read_clip(path, index, keys=("landmarks",))["landmarks"].float().numpy()
        points = (landmarks[:, list(MOUTH_POINTS)] + 0.5) / float(info["crop_size"])
        valid = np.isfinite(points).all(axis=(1, 2))
        if not valid.any():
            continue
        rest = estimate_rest(points[valid])
        target = np.where(valid[:, None, None], in_rest_widths(points, rest), 0.0).astype(np.float32)
        clips.append(MotionClip(path, index, float(info.get("fps", 25.0)), points, rest, target, valid, info))
    if not clips:
        raise ValueError(f"No clip in {folder} has lip landmarks.")
    return clips


def _windows(clips: list[MotionClip], num_frames: int) -> list[tuple[int, int]]:
    windows = []
    for number, clip in enumerate(clips):
        length = len(clip.valid)
        starts = range(0, max(length - num_frames, 0) + 1, max(num_frames // 2, 1))
        windows += [(number, start) for start in starts]
    return windows


def _batch(clips: list[MotionClip], picks: list[tuple[int, int]], num_frames: int):
    features, targets, weights = [], [], []
    for number, start in picks:
        clip = clips[number]
        stop = min(start + num_frames, len(clip.valid))
        whisper = read_clip(clip.path, clip.index, keys=("whisper",), frames=slice(start, stop))["whisper"].float()
        pad = num_frames - (stop - start)
        features.append(torch.nn.functional.pad(whisper, (0, 0, 0, 0, 0, 0, 0, pad)))
        targets.append(torch.nn.functional.pad(torch.from_numpy(clip.target[start:stop]), (0, 0, 0, 0, 0, pad)))
        weights.append(torch.nn.functional.pad(torch.from_numpy(clip.valid[start:stop]).float(), (0, pad)))
    return torch.stack(features), torch.stack(targets), torch.stack(weights)


def train_mouth_motion(config: MotionTrainConfig, progress=None) -> Path:
    """Train, save ``<output>/mouth_motion.safetensors`` (and ``results.json`` with ``eval_data``)."""
    from accelerate import Accelerator

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "motion_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    clips = load_motion_clips(config.data)
    windows = _windows(clips, config.num_frames)
    probe = read_clip(clips[0].path, clips[0].index, keys=("whisper",), frames=slice(0, 1))["whisper"]
    num_layers, window, feature_dim = probe.shape[1:]
    torch.manual_seed(config.seed)
    model = AudioToMouthMotion(MouthMotionConfig(
        num_layers=num_layers, window=window, feature_dim=feature_dim, hidden_dim=config.hidden_dim,
        temporal_layers=config.temporal_layers, fps=clips[0].fps))
    model.rest.copy_(torch.from_numpy(np.mean([clip.rest for clip in clips], axis=0)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.max_steps,
                                                    pct_start=0.05)
    accelerator = Accelerator()
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    rng = np.random.default_rng(config.seed)
    started, log = time.time(), []
    for step in range(1, config.max_steps + 1):
        picks = [windows[i] for i in rng.integers(len(windows), size=config.batch_size)]
        features, target, weight = (t.to(accelerator.device) for t in _batch(clips, picks, config.num_frames))
        error = (model(features) - target).square().mean(dim=(2, 3))
        loss = (error * weight).sum() / weight.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        if step % config.log_every == 0 or step == config.max_steps:
            log.append({"step": step, "loss": float(loss.detach()), "seconds": round(time.time() - started, 1)})
            if progress is not None:
                progress(step, config.max_steps, float(loss.detach()))
    model = accelerator.unwrap_model(model).eval()
    path = save_mouth_motion_model(output / "mouth_motion.safetensors", model)
    (output / "log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log))
    if config.eval_data is not None:
        results = evaluate_mouth_motion(model, config.eval_data)
        results["train_seconds"] = round(time.time() - started, 1)
        (output / "results.json").write_text(json.dumps(results, indent=2))
    return path


@torch.no_grad()
def evaluate_mouth_motion(model: AudioToMouthMotion, folder: str | Path) -> dict:
    """How the predicted lip opening follows the truth on every clip of a shard folder.

    The truth is the clip's ``opening`` array where the shards have one (the toy world's ground truth),
    else the opening of its tracked landmarks. The prediction is put on the clip's own resting mouth.
    Returns the Pearson r pooled over all frames (each clip centred) and on speech frames (toy:
    ``silent``), the mean per-clip r, and the predicted-to-true amplitude ratio of the landmark opening.
    """
    model = model.eval()
    predicted, truth, speech, tracked = [], [], [], []
    per_clip = []
    for clip in load_motion_clips(folder):
        arrays = read_clip(clip.path, clip.index, keys=("whisper", "opening", "silent"))
        motion = model.predict(arrays["whisper"].float(), clip.fps, clip.rest)
        reference = arrays["opening"].float().numpy() if "opening" in arrays else mouth_opening(clip.points)
        keep = clip.valid & np.isfinite(reference)
        guess = motion.opening()[keep]
        predicted.append(guess - guess.mean())
        truth.append(reference[keep] - reference[keep].mean())
        tracked.append(MouthMotion(clip.points[keep], clip.fps, clip.rest).opening())
        speech.append(~arrays["silent"].bool().numpy()[keep] if "silent" in arrays else np.ones(keep.sum(), bool))
        per_clip.append(pearson(guess, reference[keep]))
    guess, true = np.concatenate(predicted), np.concatenate(truth)
    on_speech = np.concatenate(speech)
    amplitude = float(np.std(guess) / np.std(np.concatenate([t - t.mean() for t in tracked])))
    return {
        "clips": len(per_clip),
        "frames": int(len(guess)),
        "r_all_frames": round(pearson(guess, true), 4),
        "r_speech_frames": round(pearson(guess[on_speech], true[on_speech]), 4),
        "r_mean_per_clip": round(float(np.mean(per_clip)), 4),
        "amplitude_ratio": round(amplitude, 3),
    }
