"""Evaluation of a toy model on held-out identities and sentences, measured from pixels (ours).

For each held-out clip the pipeline regenerates the masked region twice: with the clip's own speech
and with another clip's speech (the shuffled-audio control). The pixel ruler (``measure.py``) reads
the mouth opening of the results; figures:

- ``correlation``: Pearson r of measured vs ground-truth opening, own speech (target >= 0.8);
- ``shuffled_correlation``: the same with the audio shuffled across clips (must stay near 0: the
  mouth follows the audio, not the masked video); ``shuffled_floor`` is what a perfect lip-syncer
  would score there (the clips' silences partly line up), ``shuffled_follows_its_audio`` the
  correlation of the shuffled result with the shuffled speech's own ground truth;
- ``silent_closed``: share of silent frames whose measured opening is below ``CLOSED_THRESHOLD``;
- ``outside_identical``: share of pixels outside the mask that are bit-identical to the input;
- ``inside_mae`` / ``inside_skin_error``: mean absolute colour error (0..255) inside the mask, and
  the error of the mean skin colour there (the mouth box excluded), own speech vs ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .measure import measure_opening, pearson

CLOSED_THRESHOLD = 0.15


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    return ((video.float() + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _mouth_box_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    boxes = np.zeros((len(landmarks), size, size), bool)
    for i, points in enumerate(landmarks):
        corners = points[[61, 291]]
        cx, cy = corners.mean(0)
        half_w = 0.5 * np.linalg.norm(corners[1] - corners[0]) + 2
        half_face = 0.5 * np.linalg.norm(points[454] - points[234])
        half_h = 0.25 * half_face + 2
        y0, y1 = int(max(cy - half_h, 0)), int(min(cy + half_h + 1, size))
        x0, x1 = int(max(cx - half_w, 0)), int(min(cx + half_w + 1, size))
        boxes[i, y0:y1, x0:x1] = True
    return boxes


@torch.no_grad()
def evaluate(model, vae, eval_folder: str | Path, config, output: str | Path | None = None, scheduler=None) -> dict:
    """Figures on the eval shards; writes ``opening.png`` and ``strip.png`` into ``output`` if given."""
    from ..pipeline import SayAnythingPipeline
    from ..training.shards import ShardIndex, read_clip

    index = ShardIndex.scan(eval_folder)
    entries = index.entries[: config.eval_clips]
    clips = [read_clip(path, clip) for path, clip, _, _ in entries]
    count = min([config.eval_frames] + [len(c["frames"]) for c in clips])
    pipeline = SayAnythingPipeline(model, vae, scheduler)
    measured = {"own": [], "shuffled": []}
    truth, other_truth, silent, outside, inside_mae, skin_error, strips = [], [], [], [], [], [], []
    # Each clip is evaluated on a window at its own seeded offset, so clips' leading silences do not
    # line up between a clip and the shuffled speech (that alone would correlate them).
    offsets = [int(np.random.default_rng([config.seed, number]).integers(0, len(c["frames"]) - count + 1))
               for number, c in enumerate(clips)]
    for number, clip in enumerate(clips):
        partner = (number + 1) % len(clips)
        other, other_start = clips[partner], offsets[partner]
        start = offsets[number]
        window = slice(start, start + count)
        frames = clip["frames"][window].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        mask = clip["mask"][window].float()[:, None] / 255.0
        # Reference: the clip's first or last frame, whichever is farther from the evaluated window.
        far = 0 if start > len(clip["frames"]) - (start + count) else len(clip["frames"]) - 1
        reference = clip["frames"][far].permute(2, 0, 1).float() / 127.5 - 1.0
        landmarks = clip["landmarks"][window].numpy()
        source = clip["frames"][window].numpy()
        other_window = slice(other_start, other_start + count)
        for name, features in (("own", clip["whisper"][window]), ("shuffled", other["whisper"][other_window])):
            result = pipeline(
                frames, mask, features.float(), reference=reference,
                num_inference_steps=config.sample_steps, reference_guidance_scale=config.reference_guidance,
                audio_guidance_scale=config.audio_guidance, window_length=config.num_frames,
                window_overlap=config.num_frames // 4, noise_aug_strength=0.0, seed=config.seed + number)
            pixels = _to_uint8(result)
            measured[name].append(measure_opening(pixels, landmarks))
            if name == "own":
                keep = clip["mask"][window].numpy() == 0
                outside.append(float((pixels == source)[keep].all(axis=-1).mean()))
                inside = ~keep
                inside_mae.append(float(np.abs(pixels.astype(np.float32) - source)[inside].mean()))
                skin = inside & ~_mouth_box_mask(landmarks, source.shape[1])
                skin_error.append(float(np.abs(pixels[skin].mean(0) - source[skin].mean(0).astype(np.float32)).mean()))
                if number < 4:
                    strips.append((source, pixels))
        truth.append(clip["opening"][window].numpy())
        other_truth.append(other["opening"][other_window].numpy())
        silent.append(clip["silent"][window].numpy().astype(bool))
    own, shuffled = np.concatenate(measured["own"]), np.concatenate(measured["shuffled"])
    truth_all, silent_all = np.concatenate(truth), np.concatenate(silent)
    ruler = pearson(
        np.concatenate(
            [
                measure_opening(c["frames"][o : o + count].numpy(), c["landmarks"][o : o + count].numpy())
                for c, o in zip(clips, offsets)
            ]
        ),
        truth_all,
    )
    results = {
        "correlation": pearson(own, truth_all),
        "shuffled_correlation": pearson(shuffled, truth_all),
        # What a perfect lip-syncer scores in the control: the shuffled speech's own ground truth
        # against this clip's (clips share leading/trailing silences, so it is not exactly 0).
        "shuffled_floor": pearson(np.concatenate(other_truth), truth_all),
        "shuffled_follows_its_audio": pearson(shuffled, np.concatenate(other_truth)),
        "silent_closed": float((own[silent_all] < CLOSED_THRESHOLD).mean()) if silent_all.any() else float("nan"),
        "silent_frames": int(silent_all.sum()),
        "outside_identical": float(np.mean(outside)),
        "inside_mae": float(np.mean(inside_mae)),
        "inside_skin_error": float(np.mean(skin_error)),
        "ruler_on_ground_truth": ruler,
        "eval_clips": len(clips),
        "eval_frames": int(len(own)),
    }
    if output is not None:
        _write_figures(Path(output), own, shuffled, truth_all, strips, measured["own"][0], truth[0], results)
    return results


def _write_figures(output: Path, own, shuffled, truth, strips, first_own, first_truth, results) -> None:
    import cv2

    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for source, generated in strips:
        picks = np.linspace(0, len(source) - 1, 12).round().astype(int)
        rows.append(np.concatenate(list(source[picks]), axis=1))
        rows.append(np.concatenate(list(generated[picks]), axis=1))
    if rows:
        strip = np.concatenate(rows, axis=0)
        strip = cv2.resize(strip, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(output / "strip.png"), np.ascontiguousarray(strip[..., ::-1]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(first_truth, label="ground truth (from the speech)", color="black")
    axes[0].plot(first_own, label="measured on the generated frames", color="tab:red")
    axes[0].set_xlabel("frame (25 fps)")
    axes[0].set_ylabel("mouth opening")
    axes[0].set_title("one held-out clip")
    axes[0].legend(fontsize=8)
    axes[1].scatter(truth, own, s=4, alpha=0.4, label=f"own audio r={results['correlation']:.2f}")
    axes[1].scatter(truth, shuffled, s=4, alpha=0.4, label=f"shuffled audio r={results['shuffled_correlation']:.2f}")
    axes[1].set_xlabel("ground-truth opening")
    axes[1].set_ylabel("measured opening")
    axes[1].set_title("all held-out frames")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "opening.png", dpi=110)
    plt.close(figure)
