"""The settings of the training runs (``train``, ``train-motion``), light enough for the command line's ``--help``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TRAINABLE = ("all", "attention", "new", "style")


@dataclass
class TrainConfig:
    """Every setting of a training run (written to ``<output>/train_config.json``)."""

    data: str
    output: str
    model: str = "tiny"  # preset name or a JSON config file
    init: str | None = None  # SayAnything checkpoint or single-file SVD (svd_xt*.safetensors); None = random
    vae: str | None = None  # checkpoint with an embedded VAE, or single-file SVD; default: from init
    embed_vae: bool = False  # store the VAE inside the saved model files (the toy model does)
    num_frames: int | None = None  # default: the model config's unet.num_frames
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000
    stop_at_step: int | None = None  # save the state and exit after this step (time-limited jobs); rerun to resume
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 100
    lr_min_ratio: float = 0.1  # cosine decay to this fraction of the peak
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    optimizer: str = "adamw"  # or "adamw8bit" (bitsandbytes, CUDA)
    mixed_precision: str = "no"  # "no", "bf16", "fp16"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0 = no EMA
    # all | attention (attention layers + new modules) | new (audio projection, ID-Guider, conv_in, style
    # encoder) | style (the style encoder alone: teach a trained model a style reference)
    trainable: str = "all"
    p_mean: float = 0.7  # SVD fine-tuning's log-normal noise levels
    p_std: float = 1.6
    audio_dropout: float = 0.1  # ours
    reference_dropout: float = 0.1  # ours
    motion_dropout: float = 0.3  # ours; only for models with a mouth-motion input (unet.motion_channels)
    style_dropout: float = 0.3  # ours; only for models with a style encoder (the style goes with the audio)
    style_frames: int = 40  # frames of the style reference clip (at most a prep clip's length)
    # Weight of the style encoder's mouth-motion loss (the target's lip displacement in rest widths, from the
    # reference and the audio). Ours: the displacement's variance is ~0.002, so x100 brings the loss near the
    # diffusion loss's size.
    style_motion_weight: float = 100.0
    # Extra weight of the diffusion loss on the latent cells of the mouth (the window's outer-lip hull from its
    # landmarks, grown by one cell); 0 = off. Ours: those cells carry how far the mouth opens but are a few
    # percent of the mask (toy-world figures: BENCHMARKS.md, toy world v3).
    mouth_loss_weight: float = 0.0
    noise_aug_strength: float = 0.02  # canvas augmentation, as the sampler's default
    fps: float = 25.0
    motion_bucket_id: int = 127
    use_latents: bool = True  # use latents cached in the shards when present
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    sample_every: int = 0  # 0 = no sample videos
    sample_steps: int = 10
    keep_checkpoints: int = 2
    # Inference settings this run found best (e.g. the toy run's steps and guidance), written into the
    # model files' ``defaults`` over what the data and the settings above imply (see trained_defaults).
    inference_defaults: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.optimizer not in ("adamw", "adamw8bit"):
            raise ValueError(f"optimizer must be adamw or adamw8bit, got {self.optimizer!r}")
        for name in ("audio_dropout", "reference_dropout", "motion_dropout", "style_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.mouth_loss_weight < 0:
            raise ValueError(f"mouth_loss_weight must be 0 (off) or more, got {self.mouth_loss_weight}")
        if self.batch_size < 1 or self.max_steps < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size, max_steps and gradient_accumulation_steps must be positive")


@dataclass
class MotionTrainConfig:
    """Every setting of a mouth-motion training run (written to ``<output>/motion_config.json``)."""

    data: str
    output: str
    eval_data: str | None = None  # shards to report r against (held-out speakers / sentences)
    num_frames: int = 50  # 2 s windows at 25 fps
    batch_size: int = 16
    max_steps: int = 1500
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    hidden_dim: int = 256
    temporal_layers: int = 3
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("num_frames, batch_size and max_steps must be positive")
