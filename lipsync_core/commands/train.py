"""``python -m lipsync_core train``: train SayAnything on prepared shards (accelerate; multi-GPU via
``accelerate launch``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

HELP = ("Train (or resume) a SayAnything model on shards from `prep`. One GPU: run it directly; several "
        "GPUs or machines: `accelerate launch [--num_processes N ...] -m lipsync_core train ...` (no code change).")

_HELP = {
    "data": "folder of training shards (from `python -m lipsync_core prep`)",
    "output": "run folder: log.jsonl, state-<step>/ (resumed automatically), model-<step>.safetensors, samples/",
    "model": "model size preset (tiny, full) or a JSON config file; ignored with --init",
    "init": "start from a SayAnything checkpoint or a single-file SVD (svd_xt*.safetensors)",
    "vae": "VAE source: a SayAnything checkpoint with an embedded VAE, or a single-file SVD",
    "embed_vae": "store the VAE inside the saved model files",
    "trainable": "all | attention (attention layers + new modules) | new (audio projection, ID-Guider, conv_in, "
                 "style encoder) | style (the style encoder alone)",
    "optimizer": "adamw | adamw8bit (bitsandbytes, CUDA)",
    "mixed_precision": "no | bf16 | fp16",
    "ema_decay": "EMA decay of the weights (0 = off); saved models then hold the EMA weights",
    "p_mean": "log-normal noise levels: mean of ln(sigma)",
    "p_std": "log-normal noise levels: std of ln(sigma)",
    "audio_dropout": "probability of training a sample with the null audio (zero Whisper features)",
    "reference_dropout": "probability of training a sample without the reference (zero ID residuals)",
    "motion_dropout": "probability of training a sample without the mouth motion (models with a motion input)",
    "style_dropout": "probability of training a sample without the speaking-style reference (models with a "
                     "style encoder; samples without audio never get one)",
    "style_frames": "frames of the style reference: a stretch of another clip of the same speaker (at most a "
                    "prep clip's length; speakers are named by the video file up to '__')",
    "mouth_loss_weight": "extra weight of the diffusion loss on the mouth's latent cells (the outer lips from the "
                         "shards' landmarks; 0 = off)",
    "sample_every": "write a sample strip every N steps (0 = never)",
    "inference_defaults": "sampler settings written into the model files' defaults, e.g. '{\"steps\": 20}'",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.config import TrainConfig

    add_dataclass_arguments(parser, TrainConfig, _HELP)


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class: type, helps: dict[str, str]) -> None:
    """One ``--flag`` per field of a config dataclass (``train``, ``train-motion``)."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        text = helps.get(field.name, field.name.replace("_", " "))
        if kind is dict:  # a JSON object, e.g. --inference-defaults '{"steps": 20}'
            parser.add_argument(flag, type=json.loads, default=field.default_factory(), help=text + " (JSON)")
            continue
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=text)
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if typing.get_args(kind) else kind
        parser.add_argument(flag, type=base, required=required, default=None if required else field.default,
                            help=text + ("" if required else f" (default: {field.default})"))


def main(args: argparse.Namespace) -> int:
    from ..compat import make_torchvision_importable
    from ..training.config import TrainConfig
    from ..training.train import train

    make_torchvision_importable()
    config = TrainConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)})
    path = train(config)
    print(f"saved {path}")
    return 0
