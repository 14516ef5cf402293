"""The speaking-style reference on the toy world: one sentence, two characters, their own styles.

``python -m benchmarks.style_reference MODEL RUN WHISPER`` takes the toy model MODEL, the held-out shards
of its toy run (``RUN/shards/eval``) and a converted Whisper folder. The two held-out characters whose
gains differ most each say the same new held-out sentence: without a style reference, and with a
reference clip of their own (another of their clips). The ruler measures each mouth; the truth is the
character's own style applied to the sentence (``SpeakingStyle.apply``). Writes
``docs/images/toy_style_pair.jpg`` (the frames, and the opening over time) and
``benchmarks/style_reference.json`` (amplitudes, plus the style figures of ``RUN/results.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("run", help="the toy run folder (its shards/eval and results.json)")
    parser.add_argument("whisper")
    parser.add_argument("--picture", default=str(REPO / "docs" / "images" / "toy_style_pair.jpg"))
    parser.add_argument("--json", default=str(HERE / "style_reference.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from lipsync_core.audio import Audio, load_whisper_encoder
    from lipsync_core.checkpoint import load_checkpoint
    from lipsync_core.metrics import pearson, slope
    from lipsync_core.pipeline import SayAnythingPipeline
    from lipsync_core.plan import SamplerOptions
    from lipsync_core.style import style_condition
    from lipsync_core.toy.evaluate import encode_clip_style
    from lipsync_core.toy.measure import measure_opening
    from lipsync_core.toy.speech import SENTENCES, compose, speak
    from lipsync_core.toy.world import SpeakingStyle
    from lipsync_core.training.dataset import clip_identity
    from lipsync_core.training.shards import ShardIndex, read_clip

    torch.set_num_threads(args.threads)
    started = time.time()
    model, vae = load_checkpoint(args.model)
    defaults = model.defaults
    index = ShardIndex.scan(Path(args.run) / "shards" / "eval")
    by_identity: dict[str, list[int]] = {}
    for number, (_, _, _, info) in enumerate(index.entries):
        by_identity.setdefault(clip_identity(info), []).append(number)
    styles = {i: index.entries[n[0]][3]["speaking_style"] for i, n in by_identity.items()}
    low = min(styles, key=lambda i: styles[i]["gain"])
    high = max(styles, key=lambda i: styles[i]["gain"])

    utterance = compose([speak(SENTENCES[-1], "en-us", 155)], [0.4, 0.4], defaults.fps)
    whisper = load_whisper_encoder(args.whisper)
    count = len(utterance.opening)
    features = whisper.frame_features(Audio(torch.from_numpy(utterance.waveform), 16000), defaults.fps,
                                      num_frames=count)
    pipeline = SayAnythingPipeline(model, vae)
    rows, curves, figures = [], {}, {}
    for identity in (low, high):
        target, reference_clip = (read_clip(*index.entries[n][:2]) for n in by_identity[identity][:2])
        frames_needed = min(count, len(target["frames"]))
        window = slice(0, frames_needed)
        frames = target["frames"][window].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        mask = target["mask"][window].float()[:, None] / 255.0
        reference = target["frames"][-1].permute(2, 0, 1).float() / 127.5 - 1.0
        landmarks = target["landmarks"][window].numpy()
        truth = SpeakingStyle(**styles[identity]).apply(utterance)[0][:frames_needed]
        neutral = SpeakingStyle().apply(utterance)[0][:frames_needed]
        speech = ~utterance.silent[:frames_needed]
        style = encode_clip_style(model, reference_clip, defaults.style_reference_frames, window=defaults.window)
        for label, given in (("no reference", None), ("own reference", style)):
            speech_features = features[:frames_needed].float()
            plan = SamplerOptions(noise_aug_strength=0.0).resolve(defaults, styled=given is not None)
            result = pipeline(frames, mask, speech_features, reference=reference, plan=plan,
                              style=None if given is None else given.tokens,
                              motion=style_condition(given, model, speech_features, defaults.fps, defaults.window,
                                                     frames.shape[-1] // pipeline.vae_scale_factor))
            pixels = ((result.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            opening = measure_opening(pixels, landmarks)
            name = f"character {identity} (gain {styles[identity]['gain']:.2f}), {label}"
            curves[name] = opening
            figures[name] = {"amplitude": round(slope(opening[speech], neutral[speech]), 4),
                             "true_amplitude": round(slope(truth[speech], neutral[speech]), 4),
                             "speech_r": round(pearson(opening[speech], truth[speech]), 4)}
            picks = np.linspace(np.flatnonzero(speech)[0], np.flatnonzero(speech)[-1], 10).round().astype(int)
            rows.append(np.concatenate(list(pixels[picks]), axis=1))
        curves[f"character {identity}: its own style, the truth"] = truth
    _write_picture(Path(args.picture), rows, curves)
    results_path = Path(args.run) / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    record = {
        "what": "Speaking-style reference on toy-world held-out characters, measured from pixels",
        "sentence": SENTENCES[-1],
        "pair": figures,
        "evaluation": results.get("style"),
        "model": str(args.model),
        "machine": {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "wall_seconds": round(time.time() - started, 1),
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _write_picture(path: Path, rows: list[np.ndarray], curves: dict[str, np.ndarray]) -> None:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strip = cv2.resize(np.concatenate(rows, axis=0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    figure = plt.figure(figsize=(12, 9))
    top = figure.add_axes((0.2, 0.42, 0.78, 0.56))
    top.imshow(strip)
    top.set_axis_off()
    labels = [name for name in curves if "truth" not in name]
    for row, label in enumerate(labels):
        top.text(-8, (row + 0.5) * strip.shape[0] / len(labels), label.replace(", ", ",\n"), ha="right",
                 va="center", fontsize=8)
    axis = figure.add_axes((0.07, 0.06, 0.9, 0.3))
    colours = ["tab:blue", "tab:blue", "black", "tab:red", "tab:red", "dimgray"]
    styles = [":", "-", "--", ":", "-", "--"]
    for (name, curve), colour, line in zip(curves.items(), colours, styles):
        axis.plot(curve, color=colour, linestyle=line, label=name)
    axis.set_xlabel("frame (25 fps)")
    axis.set_ylabel("mouth opening")
    axis.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


if __name__ == "__main__":
    main()
