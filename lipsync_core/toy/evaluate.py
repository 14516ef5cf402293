"""Evaluation of a toy model on held-out identities and sentences, measured from pixels (ours).

Every held-out clip is a talking source (its mouth and jaw move with its own speech). The pipeline
regenerates the masked region with: the clip's own speech; another clip's speech (cross-dubbing, a
new sentence); silence (LipLeak: whatever the source mouth does, the output must stay closed); and
its own speech with the ID-Guider's reference removed. The pixel ruler (``measure.py``) reads the
mouth opening of the results. The figures (``dubbing_figures``, shared with the user's-path proof
in ``proof.py``):

- ``speech_correlation``: Pearson r of measured vs true opening on speech frames only (a
  speech/silence detector scores little there), ``correlation`` pooled over all frames,
  ``best_lag`` (frames; > 0: the mouth comes late) and per-clip spread;
- ``dub_vs_new_audio`` / ``dub_vs_source_mouth``: the cross-dubbed mouth against the new speech's
  truth (must follow it) and against the source clip's own mouth (must not), speech frames of the
  new audio; ``dub_source_floor`` is what a perfect lip-syncer scores against the source there;
- ``lipleak_open``: share of frames dubbed with silence whose mouth is open (>= CLOSED_THRESHOLD);
  ``source_open`` the same share in the source clips;
- ``identity_error`` / ``vae_error`` / ``identity_ratio``: mean absolute colour error (0..255) on the
  skin inside the mask (mouth box excluded) of the output, of the VAE's own reconstruction of the same
  frames (the floor any output of this VAE has) and their ratio; ``no_reference_ratio`` the same
  with the reference removed (zero ID-Guider features);
- ``outside_identical``: share of pixels outside the mask bit-identical to the input;
- ``style`` (models with a style encoder): each clip again with a style reference (the first
  ``style_frames`` of another clip of the same character) and, for the first half, with the reference of
  the held-out character whose gain differs most (the swap test); see ``style_figures``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..metrics import pearson, slope
from ..motion import MOUTH_POINTS, estimate_rest, in_rest_widths
from ..pipeline import SayAnythingPipeline, decode_latents, encode_latents
from ..plan import SamplingPlan
from ..style import StyleReference, calibrate_lips, style_condition
from ..tensors import model_to_uint8, uint8_to_mask, uint8_to_model
from ..training.dataset import clip_identity
from ..training.shards import ShardIndex, read_clip
from .measure import measure_opening, measure_width

CLOSED_THRESHOLD = 0.15
MAX_LAG = 4


def _mouth_box_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    boxes = np.zeros((len(landmarks), height, width), bool)
    for i, points in enumerate(landmarks):
        corners = points[[61, 291]]
        cx, cy = corners.mean(0)
        half_w = 0.5 * np.linalg.norm(corners[1] - corners[0]) + 2
        half_face = 0.5 * np.linalg.norm(points[454] - points[234])
        half_h = 0.25 * half_face + 2
        y0, y1 = int(max(cy - half_h, 0)), int(min(cy + half_h + 1, height))
        x0, x1 = int(max(cx - half_w, 0)), int(min(cx + half_w + 1, width))
        boxes[i, y0:y1, x0:x1] = True
    return boxes


def skin_region(mask: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Pixels inside the editing mask (0..1 [T, H, W]) but off the mouth: where the identity (skin colour) shows."""
    return (mask > 0.5) & ~_mouth_box_mask(landmarks, mask.shape[1:])


def colour_error(pixels: np.ndarray, source: np.ndarray, region: np.ndarray) -> float:
    return float(np.abs(pixels.astype(np.float32) - source.astype(np.float32))[region].mean())


def lagged_correlation(measured: list[np.ndarray], truth: list[np.ndarray], keep: list[np.ndarray], lag: int) -> float:
    """r of measured[t + lag] vs truth[t] over the kept frames of every clip."""
    a, b = [], []
    for m, t, k in zip(measured, truth, keep):
        n = len(t)
        index = np.arange(max(0, -lag), min(n, n - lag))
        index = index[k[index]]
        a.append(m[index + lag])
        b.append(t[index])
    return pearson(np.concatenate(a), np.concatenate(b))


def opening_figures(measured: list[np.ndarray], truth: list[np.ndarray], silent: list[np.ndarray]) -> dict:
    """Speech-only and pooled r, best lag and per-clip spread of measured vs true openings (lists per clip)."""
    speech = [~s for s in silent]
    lags = {lag: lagged_correlation(measured, truth, speech, lag) for lag in range(-MAX_LAG, MAX_LAG + 1)}
    per_clip = [pearson(m[k], t[k]) for m, t, k in zip(measured, truth, speech) if k.sum() > 2]
    return {
        "speech_correlation": lags[0],
        "correlation": pearson(np.concatenate(measured), np.concatenate(truth)),
        "best_lag": int(max(lags, key=lags.get)),
        "lag_correlation": {str(k): round(v, 4) for k, v in lags.items()},
        "per_clip_speech_correlation": [round(v, 4) for v in per_clip],
        "clip_speech_correlation_min": float(np.min(per_clip)) if per_clip else float("nan"),
        "clip_speech_correlation_median": float(np.median(per_clip)) if per_clip else float("nan"),
        "speech_frames": int(sum(k.sum() for k in speech)),
    }


def dubbing_figures(own: list, own_truth: list, own_silent: list, dub: list, new_truth: list, new_silent: list,
                    silent_dub: list) -> dict:
    """Every lip-sync figure of an evaluation (per-clip lists of measured / true openings and silence flags).

    own: measured on clips dubbed with their own speech; dub: dubbed with another clip's speech
    (``new_truth``, ``new_silent``), the source clip's own truth is ``own_truth``; silent_dub: dubbed
    with silence.
    """
    figures = opening_figures(own, own_truth, own_silent)
    new_speech = np.concatenate([~s for s in new_silent])
    dub_all, new_all, source_all = (np.concatenate(x) for x in (dub, new_truth, own_truth))
    figures.update({
        "dub_vs_new_audio": pearson(dub_all[new_speech], new_all[new_speech]),
        "dub_vs_source_mouth": pearson(dub_all[new_speech], source_all[new_speech]),
        "dub_source_floor": pearson(new_all[new_speech], source_all[new_speech]),
        "dub_best_lag": opening_figures(dub, new_truth, new_silent)["best_lag"],
        "silent_closed": float(np.mean(np.concatenate(own)[np.concatenate(own_silent)] < CLOSED_THRESHOLD)),
        "silent_frames": int(np.concatenate(own_silent).sum()),
    })
    if silent_dub:
        leak = np.concatenate(silent_dub)
        source = np.concatenate(own_truth[: len(silent_dub)])
        figures.update({"lipleak_open": float(np.mean(leak >= CLOSED_THRESHOLD)),
                        "source_open": float(np.mean(source >= CLOSED_THRESHOLD)), "lipleak_frames": int(len(leak))})
    return figures


@torch.no_grad()
def evaluate(model, vae, eval_folder: str | Path, config, output: str | Path | None = None, scheduler=None,
             silence_features: torch.Tensor | None = None) -> dict:
    """Figures on the eval shards; writes ``opening.png`` and ``strip.png`` into ``output`` if given.

    ``silence_features``: per-frame Whisper features of silence ``[>= eval_frames, ...]`` for the
    LipLeak run (skipped without them). The silence and no-reference runs use the first half of the clips.
    """

    index = ShardIndex.scan(eval_folder)
    entries = index.entries[: config.eval_clips]
    clips = [read_clip(path, clip) for path, clip, _, _ in entries]
    count = min([config.eval_frames] + [len(c["frames"]) for c in clips])
    pipeline = SayAnythingPipeline(model, vae, scheduler)
    measured = {"own": [], "dub": [], "silence": []}
    truth, silent, new_truth, new_silent, outside, strips = [], [], [], [], [], []
    errors = {"identity": [], "vae": [], "no_reference": []}
    # Each clip is evaluated on a window at its own seeded offset, so clips' leading silences do not
    # line up between a clip and the dubbed speech (that alone would correlate them).
    offsets = [int(np.random.default_rng([config.seed, number]).integers(0, len(c["frames"]) - count + 1))
               for number, c in enumerate(clips)]
    half = max(1, (len(clips) + 1) // 2)
    styles = _style_references(model, index, entries, config) if model.config.style is not None else None
    style_runs: dict[str, list] = {"own": [], "style": [], "style_swap": []}  # (opening, width) per clip
    for number, clip in enumerate(clips):
        partner = (number + 1) % len(clips)
        other, other_start = clips[partner], offsets[partner]
        start = offsets[number]
        window = slice(start, start + count)
        other_window = slice(other_start, other_start + count)
        frames = uint8_to_model(clip["frames"][window])
        mask = uint8_to_mask(clip["mask"][window])
        # Reference: the clip's first or last frame, whichever is farther from the evaluated window.
        far = 0 if start > len(clip["frames"]) - (start + count) else len(clip["frames"]) - 1
        reference = uint8_to_model(clip["frames"][far][None])[0]
        id_features = model.encode_reference(reference[None].to(model.device))
        landmarks = clip["landmarks"][window].numpy()
        source = clip["frames"][window].numpy()
        skin = skin_region(clip["mask"][window].numpy() / 255.0, landmarks)
        runs = [("own", clip["whisper"][window], id_features), ("dub", other["whisper"][other_window], id_features)]
        if styles is not None:
            runs.append(("style", clip["whisper"][window], id_features, styles["own"][number]))
            if number < half:
                runs.append(("style_swap", clip["whisper"][window], id_features, styles["swap"][number]))
        if number < half:
            if silence_features is not None:
                runs.append(("silence", silence_features[:count], id_features))
            runs.append(("no_reference", clip["whisper"][window], model.zero_id_features(id_features)))
        for name, features, ids, *style in runs:
            style = style[0] if style else None
            audio_guidance = config.audio_guidance
            if style is not None and config.style_audio_guidance is not None:
                audio_guidance = config.style_audio_guidance
            plan = SamplingPlan(steps=config.sample_steps, reference_guidance=config.reference_guidance,
                                audio_guidance=audio_guidance, motion_guidance=config.motion_guidance,
                                window=config.num_frames, overlap=config.num_frames // 4, noise_aug_strength=0.0,
                                seed=config.seed + number)
            result = pipeline(
                frames, mask, features.float(), id_features=ids, plan=plan,
                style=None if style is None else style.tokens,
                motion=style_condition(style, model, features.float(), 25.0, config.num_frames,
                                       frames.shape[-1] // pipeline.vae_scale_factor))
            pixels = model_to_uint8(result)
            if name in style_runs and styles is not None:
                style_runs[name].append((measure_opening(pixels, landmarks), measure_width(pixels, landmarks)))
                if name != "own":
                    continue
            if name == "no_reference":
                errors["no_reference"].append(colour_error(pixels, source, skin))
                continue
            measured[name].append(measure_opening(pixels, landmarks))
            if name == "own":
                keep = clip["mask"][window].numpy() == 0
                outside.append(float((pixels == source)[keep].all(axis=-1).mean()))
                errors["identity"].append(colour_error(pixels, source, skin))
                recon = model_to_uint8(decode_latents(vae, encode_latents(vae, frames), chunk_size=config.num_frames))
                errors["vae"].append(colour_error(recon, source, skin))
                if number < 4:
                    strips.append((source, pixels))
        truth.append(clip["opening"][window].numpy())
        silent.append(clip["silent"][window].numpy().astype(bool))
        new_truth.append(other["opening"][other_window].numpy())
        new_silent.append(other["silent"][other_window].numpy().astype(bool))
    results = dubbing_figures(measured["own"], truth, silent, measured["dub"], new_truth, new_silent,
                              measured["silence"])
    if styles is not None:
        windows = [slice(o, o + count) for o in offsets]
        source = [(measure_opening(c["frames"][w].numpy(), c["landmarks"][w].numpy()),
                   measure_width(c["frames"][w].numpy(), c["landmarks"][w].numpy())) for c, w in zip(clips, windows)]
        results["style"] = style_figures([{key: c[key][w].numpy() for key in ("opening", "neutral_opening", "silent")}
                                          for c, w in zip(clips, windows)], source, style_runs, styles)
    ruler = pearson(np.concatenate([measure_opening(c["frames"][o:o + count].numpy(),
                                                    c["landmarks"][o:o + count].numpy())
                                    for c, o in zip(clips, offsets)]), np.concatenate(truth))
    identity, vae_error = float(np.mean(errors["identity"])), float(np.mean(errors["vae"]))
    # The no-reference runs cover the first clips only: compare them with those clips' figures.
    ran = len(errors["no_reference"])
    no_reference = float(np.mean(errors["no_reference"]))
    results.update({
        "outside_identical": float(np.mean(outside)),
        "identity_error": identity,
        "vae_error": vae_error,
        "identity_ratio": identity / vae_error,
        "no_reference_error": no_reference,
        "no_reference_ratio": no_reference / float(np.mean(errors["vae"][:ran])),
        "reference_ratio_same_clips": float(np.mean(errors["identity"][:ran])) / float(np.mean(errors["vae"][:ran])),
        "ruler_on_ground_truth": ruler,
        "eval_clips": len(clips),
        "eval_frames": int(sum(len(t) for t in truth)),
    })
    if output is not None:
        _write_figures(Path(output), np.concatenate(measured["own"]), np.concatenate(measured["dub"]),
                       np.concatenate(truth), strips, measured["own"][0], truth[0], results)
    return results


def encode_clip_style(model, clip: dict, count: int, fps: float = 25.0, window: int = 8):
    """The ``StyleReference`` of a shard clip (``frames``, ``whisper``, ``silent``, ``landmarks``): its ``count``
    frames with the most speech, since a style shows only while the character talks, its resting mouth and
    its lip gain (``style.calibrate_lips`` over windows of ``window`` frames)."""

    silent = clip["silent"].numpy().astype(np.float32)
    speech = np.convolve(1 - silent, np.ones(count), "valid")
    start = int(np.argmax(speech))
    span = slice(start, start + count)
    frames = uint8_to_model(clip["frames"][span])
    points = (clip["landmarks"].float().numpy()[:, list(MOUTH_POINTS)] + 0.5) / clip["frames"].shape[2]
    rest = estimate_rest(points[np.isfinite(points).all(axis=(1, 2))])
    lips = np.nan_to_num(in_rest_widths(points[span], rest))
    features = clip["whisper"][span].float()
    with torch.no_grad():
        tokens = model.encode_style(frames, features, torch.from_numpy(lips) if model.config.style.lip_motion
                                    else None).float().cpu()
    return StyleReference(tokens, np.arange(start, start + count), fps, start / fps, count / fps,
                          float(1 - silent[span].mean()), rest, calibrate_lips(model, tokens, features, lips, window))


def _style_references(model, index, entries, config) -> dict:
    """Encoded style references per evaluated clip: ``own`` (another clip of the same character) and
    ``swap`` (a clip of the held-out character whose gain differs most), plus their true styles."""

    frames_needed = config.style_frames
    by_identity: dict[str, list[int]] = {}
    for number, (_, _, length, info) in enumerate(index.entries):
        if length >= frames_needed and not info.get("listening"):
            by_identity.setdefault(clip_identity(info), []).append(number)

    def encoded(number: int) -> torch.Tensor:
        path, clip, _, _ = index.entries[number]
        return encode_clip_style(model, read_clip(path, clip, ("frames", "whisper", "silent", "landmarks")),
                                 frames_needed, window=config.num_frames)

    gains = {clip_identity(info): (info.get("speaking_style") or {}).get("gain", 1.0)
             for _, _, _, info in index.entries}
    own, swap, own_style, swap_style = [], [], [], []
    for number, (_, _, _, info) in enumerate(entries):
        identity = clip_identity(info)
        partners = [n for n in by_identity.get(identity, []) if n != number] or [number]
        own.append(encoded(partners[0]))
        other = max((i for i in by_identity if i != identity), key=lambda i: abs(gains[i] - gains[identity]))
        swap.append(encoded(by_identity[other][0]))
        own_style.append(info.get("speaking_style") or {})
        swap_style.append(index.entries[by_identity[other][0]][3].get("speaking_style") or {})
    return {"own": own, "swap": swap, "own_style": own_style, "swap_style": swap_style}


def style_figures(truths: list[dict], source: list[tuple], runs: dict[str, list], styles: dict) -> dict:
    """Speaking-style figures from per-clip (opening, width) measurements.

    Amplitude: the slope of a clip's measured opening on the neutral speaker's opening (speech frames),
    in the ruler's units of the true styled opening (``ruler_amplitude``, fitted on the sources); its
    truth is the same slope of the clip's true opening. Width: the open mouth's measured width
    (``measure_width``, frames open >= 0.25 in truth) against the source's own, measured alike.
    ``*_error``: mean absolute error without (``plain``) and with the reference; ``swap_toward``: share
    of swapped clips whose amplitude moved from the own-reference result toward the other character's
    truth, ``swap_shift``: that move as a fraction of the true difference.
    """
    def amplitude(opening, truth):
        speech = ~truth["silent"].astype(bool)
        return slope(opening[speech], truth["neutral_opening"][speech])

    def open_width(width, truth):
        keep = ~truth["silent"].astype(bool) & (truth["opening"] >= 0.25)
        return float(width[keep].mean()) if keep.any() else float("nan")

    true_amp = [amplitude(t["opening"], t) for t in truths]
    ruler = float(np.median([amplitude(o, t) / a for (o, _), t, a in zip(source, truths, true_amp)]))
    figures: dict = {"ruler_amplitude": ruler}
    for name in ("own", "style"):
        amps = [amplitude(o, t) / ruler for (o, _), t in zip(runs[name], truths)]
        widths = [open_width(w, t) - open_width(sw, t) for (_, w), (_, sw), t in zip(runs[name], source, truths)]
        label = "plain" if name == "own" else "reference"
        figures[f"amplitude_error_{label}"] = float(np.mean(np.abs(np.subtract(amps, true_amp))))
        figures[f"width_error_{label}"] = float(np.nanmean(np.abs(widths)))
        figures[f"amplitude_{label}"] = [round(a, 4) for a in amps]
    figures["amplitude_true"] = [round(a, 4) for a in true_amp]
    true_openings, silences = [t["opening"] for t in truths], [t["silent"].astype(bool) for t in truths]
    for name, label in (("own", "plain"), ("style", "reference")):  # lip sync with and without the reference
        openings = [o for o, _ in runs[name]]
        figures[f"speech_r_{label}"] = opening_figures(openings, true_openings, silences)["speech_correlation"]
    figures["amplitude_error_ratio"] = (figures["amplitude_error_reference"]
                                        / max(figures["amplitude_error_plain"], 1e-9))
    figures["width_error_ratio"] = figures["width_error_reference"] / max(figures["width_error_plain"], 1e-9)
    figures["gains"] = [round(s.get("gain", 1.0), 4) for s in styles["own_style"]]
    swapped = runs["style_swap"]
    if swapped:
        own_amp = figures["amplitude_reference"][: len(swapped)]
        swap_amp = [amplitude(o, t) / ruler for (o, _), t in zip(swapped, truths)]
        # The other character's amplitude on this clip's speech, minus this one's.
        want = [t * (s.get("gain", 1.0) / o.get("gain", 1.0) - 1)
                for s, o, t in zip(styles["swap_style"], styles["own_style"], true_amp)]
        moved = [b - a for a, b in zip(own_amp, swap_amp)]
        pairs = [(m, w) for m, w in zip(moved, want) if w]  # a world without styles has nothing to swap
        figures["swap_toward"] = float(np.mean([np.sign(m) == np.sign(w) for m, w in pairs])) if pairs else None
        figures["swap_shift"] = float(np.mean([m / w for m, w in pairs])) if pairs else None
        figures["amplitude_swap"] = [round(a, 4) for a in swap_amp]
        figures["swap_gains"] = [round(s.get("gain", 1.0), 4) for s in styles["swap_style"][: len(swapped)]]
    return figures


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
    axes[1].scatter(truth, shuffled, s=4, alpha=0.4,
                    label=f"dubbed with another clip's speech r={results['dub_vs_source_mouth']:.2f}")
    axes[1].set_xlabel("ground-truth opening (the source clip's own mouth)")
    axes[1].set_ylabel("measured opening")
    axes[1].set_title("all held-out frames")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "opening.png", dpi=110)
    plt.close(figure)
