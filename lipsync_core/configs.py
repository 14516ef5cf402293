"""Model configuration: one JSON-serialisable dataclass per part, plus named presets.

``SayAnythingConfig.preset("full")`` has Stable Video Diffusion's UNet shapes (so SVD weights import
into it); ``"tiny"`` is for tests and the toy world (a CPU forward of 8 frames at 32x32 latents takes
well under a second).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .compat import make_torchvision_importable


class CheckpointError(ValueError):
    """A model file that cannot be loaded; the message names the file and what to do."""


PRESETS = ("tiny", "full")
# The choices the nodes, the command line and the docs offer, typed here once.
UPPER_EDGES = ("mouth", "nose", "eyes")  # top of the adaptive mask, lowest first
MASK_MODES = ("auto", "replace", "intersect", "union")  # how a user's mask combines with the face mask
FACE_SELECT_MODES = ("largest", "index")  # which face to follow where there are several


@dataclass
class UNetConfig:
    """The spatio-temporal UNet (diffusers ``UNetSpatioTemporalConditionModel`` topology).

    The first block of ``block_out_channels`` runs at latent resolution; every further block halves
    it. All but the deepest block have cross-attention (as in SVD).
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    layers_per_block: int = 2
    transformer_layers_per_block: int = 1
    cross_attention_dim: int = 1024
    addition_time_embed_dim: int = 256
    num_frames: int = 25
    # 4 noisy latents + 4 masked-video latents + 1 mask (see docs/ARCHITECTURE.md) [+ motion_channels].
    in_channels: int = 9
    out_channels: int = 4
    # The last ``motion_channels`` inputs are the rendered mouth-motion condition (ours;
    # ``motion.render_motion``), zero-initialised like the mask. 0 = no motion input (every model so far).
    motion_channels: int = 0

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.num_attention_heads = tuple(int(h) for h in self.num_attention_heads)
        if len(self.block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs at least 2 entries, got {self.block_out_channels}")
        if len(self.num_attention_heads) != len(self.block_out_channels):
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must have one entry per block "
                f"of block_out_channels {self.block_out_channels}"
            )
        for channels, heads in zip(self.block_out_channels, self.num_attention_heads):
            if channels % heads:
                raise ValueError(f"{channels} channels do not split into {heads} attention heads")
        if self.motion_channels < 0 or self.in_channels - self.motion_channels < 9:
            raise ValueError(
                f"in_channels {self.in_channels} must hold the 9 canvas inputs plus motion_channels "
                f"{self.motion_channels} (e.g. in_channels={9 + max(self.motion_channels, 0)})"
            )

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for diffusers' ``UNetSpatioTemporalConditionModel``."""
        depth = len(self.block_out_channels)
        return dict(
            sample_size=None,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (depth - 1) + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (depth - 1),
            block_out_channels=self.block_out_channels,
            addition_time_embed_dim=self.addition_time_embed_dim,
            # fps, motion bucket and noise augmentation: SVD's three micro-conditions.
            projection_class_embeddings_input_dim=3 * self.addition_time_embed_dim,
            layers_per_block=self.layers_per_block,
            cross_attention_dim=self.cross_attention_dim,
            transformer_layers_per_block=self.transformer_layers_per_block,
            num_attention_heads=self.num_attention_heads,
            num_frames=self.num_frames,
        )


@dataclass
class AudioProjectionConfig:
    """Whisper features ``[..., num_layers, window, feature_dim]`` -> ``num_tokens`` context tokens.

    Defaults fit Whisper tiny/tiny.en (embeddings + 4 encoder layers, d_model 384) with a window of
    10 encoder frames (50 Hz) per video frame.
    """

    num_layers: int = 5
    window: int = 10
    feature_dim: int = 384
    num_tokens: int = 4
    hidden_dim: int = 512


@dataclass
class IDGuiderConfig:
    """Pixel-space pyramid over the reference image: one stage per UNet resolution.

    ``latent_scale_factor`` is the VAE's spatial downsampling (8 for SVD's VAE): the stem brings the
    reference from pixels to latent resolution with that many halvings.
    """

    channels: tuple[int, ...] = (64, 128, 256, 256)
    latent_scale_factor: int = 8

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        factor = self.latent_scale_factor
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"latent_scale_factor must be a power of two, got {factor}")


@dataclass
class StyleEncoderConfig:
    """The speaking-style reference encoder (ours; ``models.style_encoder``).

    A reference clip's frames give mouth crops (``mouth_box``: left, top, right, bottom as fractions of
    the aligned crop, around the template's mouth, open jaw included) resized to ``mouth_size``; each is
    paired with the clip's Whisper features of that frame. The target's per-frame audio attends to the
    pairs through ``num_layers`` transformer layers of width ``hidden_dim``. The Whisper shapes are the
    audio projection's. ``lip_motion``: each pair also holds the frame's lip landmarks (the 40 points'
    displacement from the reference's resting mouth, in rest widths), which says how far this speaker
    opens for a sound more directly than the crop does (ours).
    """

    hidden_dim: int = 256
    num_layers: int = 2
    num_heads: int = 4
    mouth_size: int = 64
    mouth_box: tuple[float, float, float, float] = (0.28, 0.5, 0.72, 0.9)
    lip_motion: bool = False

    def __post_init__(self) -> None:
        self.mouth_box = tuple(float(v) for v in self.mouth_box)
        left, top, right, bottom = self.mouth_box
        if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"mouth_box {self.mouth_box} must be (left, top, right, bottom) fractions in 0..1")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} does not split into {self.num_heads} heads")
        if self.mouth_size < 8:
            raise ValueError(f"mouth_size must be at least 8 pixels, got {self.mouth_size}")


@dataclass
class SayAnythingConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    audio: AudioProjectionConfig = field(default_factory=AudioProjectionConfig)
    id_guider: IDGuiderConfig = field(default_factory=IDGuiderConfig)
    # None: no speaking-style input (every model before the style reference).
    style: StyleEncoderConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if isinstance(self.audio, dict):
            self.audio = AudioProjectionConfig(**self.audio)
        if isinstance(self.id_guider, dict):
            self.id_guider = IDGuiderConfig(**self.id_guider)
        if isinstance(self.style, dict):
            self.style = StyleEncoderConfig(**self.style)
        if len(self.id_guider.channels) != len(self.unet.block_out_channels):
            raise ValueError(
                f"id_guider.channels {self.id_guider.channels} needs one entry per UNet resolution "
                f"(block_out_channels {self.unet.block_out_channels})"
            )

    @classmethod
    def preset(cls, name: str) -> SayAnythingConfig:
        if name == "full":
            return cls()
        if name == "tiny":
            return cls(
                unet=UNetConfig(
                    block_out_channels=(32, 64),
                    num_attention_heads=(2, 4),
                    layers_per_block=1,
                    cross_attention_dim=32,
                    addition_time_embed_dim=8,
                    num_frames=8,
                ),
                audio=AudioProjectionConfig(num_tokens=2, hidden_dim=32),
                id_guider=IDGuiderConfig(channels=(8, 16), latent_scale_factor=4),
            )
        raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.unet.motion_channels:  # files without a motion input stay as they were
            del data["unet"]["motion_channels"]
        if self.style is None:  # nor do files without a style input
            del data["style"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SayAnythingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected {sorted(known)}")
        return cls(**{key: None if value is None else dict(value) for key, value in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SayAnythingConfig:
        return cls.from_dict(json.loads(text))


@dataclass
class ModelDefaults:
    """What a model was trained with and wants at inference: the ``defaults`` of its checkpoint file.

    Nodes and ``run`` start from these wherever the user leaves a setting on ``auto``; training writes
    them. This class is the one place each default is typed (the values below suit SVD-sized models).
    """

    crop_size: int = 512  # side of the aligned face crop, pixels
    window: int = 14  # frames denoised together
    overlap: int = 4  # frames shared by neighbouring windows
    steps: int = 10
    reference_guidance: float = 2.0
    audio_guidance: float = 4.0
    # With a mouth motion (given, or a style reference's): guidance on it (1 = none, one branch fewer).
    motion_guidance: float = 1.0
    # Audio guidance while a speaking style gives the motion (None: audio_guidance): that motion already carries
    # the speech, and a strong push on the audio pulls the mouth back toward the average speaker's.
    style_audio_guidance: float | None = None
    noise_aug_strength: float = 0.02  # SVD's canvas noise augmentation
    fps: float = 25.0  # frame rate of the training clips (a still image's default)
    motion_bucket_id: int = 127
    feature_window: int = 10  # Whisper encoder frames (50 Hz) per video frame
    upper_edge: str = "nose"  # top of the adaptive mask: mouth, nose or eyes
    mask_expand: float = 0.08  # fractions of the face size
    mask_feather: float = 0.06
    mask_hold: float = 0.5  # seconds the crop-space mask holds the jaw's outline (see face_masks)
    # Reference frames the style encoder was trained with; 0: the model takes no style reference.
    style_reference_frames: int = 0
    # Sigmas (low, high) where this model's lips are decided: the faster speed presets run the guidance
    # branches only there. None: the preset's (lipsync_core.speed.SPEED_PRESETS).
    guidance_interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.guidance_interval is not None:
            self.guidance_interval = tuple(float(v) for v in self.guidance_interval)
        if self.crop_size < 8 or self.window < 1 or not 0 <= self.overlap < self.window or self.steps < 1:
            raise ValueError(
                f"defaults out of range: crop_size={self.crop_size}, window={self.window}, "
                f"overlap={self.overlap}, steps={self.steps}"
            )

    @classmethod
    def for_preset(cls, name: str) -> ModelDefaults:
        """Sensible defaults for a fresh model of a named size (``init`` writes them)."""
        if name == "tiny":  # the toy world's scale: 64 px crops, the tiny UNet's 8-frame windows
            return cls(crop_size=64, window=8, overlap=2, noise_aug_strength=0.0)
        if name not in PRESETS:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(PRESETS)}")
        return cls()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, base: ModelDefaults | None = None) -> ModelDefaults:
        """Defaults from a file's metadata; keys this code does not know (newer files) are ignored and
        keys a file lacks (older files) keep ``base``'s (default: the class defaults; another family's own)."""
        base = base or cls()
        if not text:
            return base
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"defaults must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(base, **{key: value for key, value in data.items() if key in known})

    def replace(self, **changes: Any) -> ModelDefaults:
        """A copy with the given settings changed; ``None`` values (``auto``) keep the default."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# Temporal VAEs (diffusers ``AutoencoderKLTemporalDecoder`` keyword arguments). "full" is SVD's; "tiny"
# downsamples 4x (three blocks) for tests and the toy world.
VAE_PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
        scaling_factor=0.18215,
    ),
    "tiny": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        block_out_channels=(32, 32, 32),  # GroupNorm uses 32 groups
        layers_per_block=2,  # the original (single-file SVD) layout's decoder mid block has two resnets
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.18215,
    ),
}


def build_vae(config: str | dict[str, Any]):
    """A randomly initialised temporal VAE from a preset name or a diffusers config dict."""
    make_torchvision_importable()
    from diffusers import AutoencoderKLTemporalDecoder

    if isinstance(config, str):
        if config not in VAE_PRESETS:
            raise ValueError(f"unknown VAE size {config!r}; choose one of {', '.join(VAE_PRESETS)}")
        config = VAE_PRESETS[config]
    kwargs = {key: value for key, value in dict(config).items() if not key.startswith("_")}
    return AutoencoderKLTemporalDecoder(**kwargs)


def vae_scale_factor(vae) -> int:
    """Spatial downsampling of a diffusers VAE, read from its config (not assumed to be 8)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)
