"""What a run will do, resolved once: the user's options with ``auto`` filled from the model file and the speed preset.

``SamplerOptions`` and ``FaceOptions`` are what users set (the nodes' widgets, the ``run`` command's flags);
``None`` there means ``auto``. ``SamplerOptions.resolve(model defaults)`` returns a ``SamplingPlan``: one frozen
object that the pipeline's steps, the orchestrator and its front ends take as it is. A new sampler setting is
a field here, its widget or flag, and the code that uses it; nothing between passes it on by name.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .configs import ModelDefaults
from .speed import DECODE_CONTEXT, SCHEDULES, SPEED_PRESETS, SPEEDS

DEFAULTS = ModelDefaults()


@dataclass(frozen=True)
class SamplingPlan:
    """Every setting of one sampling run, resolved (no ``auto`` left). The defaults are ``ModelDefaults()``'s
    with the full sampler (the ``quality`` preset).

    Guidance: ``uncond + reference_guidance (ref - uncond) + audio_guidance (ref_audio - ref)``, plus
    ``(motion_guidance - 1) (ref_audio - ref_audio without the motion)`` where a mouth motion is given;
    ``style_strength`` weighs a speaking style's tokens and motion (0: none, 1: as trained).
    Windows: ``window`` frames per UNet call, ``overlap`` shared by neighbours and blended at every step.
    Micro-conditioning (SVD's): ``fps``, ``motion_bucket_id``, ``noise_aug_strength`` (the canvas' noise).
    VAE: ``decode_chunk`` frames encoded or decoded at once, each decode chunk with ``decode_context`` latent
    frames of context on either side (fewer decode faster, with a faint colour step left at chunk edges).
    Speed (ours, after the papers named; ``SPEED_PRESETS`` fill them):
        guidance_interval: ``(low, high)`` sigmas where the guidance branches run, elsewhere the fully
            conditioned branch alone (Kynkaenniemi et al. 2024); None: at every step.
        deep_cache: the UNet's deep blocks run every this many steps per window, the shallow ones every step
            (DeepCache, Ma et al. 2024); 1: every step.
        schedule: ``karras`` (SVD's sigmas) or ``few_step`` (``speed.few_step_sigmas``).
        window_batch: windows denoised in one batched forward (memory grows with it; same result up to
            float rounding).
        channels_last, bf16_decode: on CUDA, the UNet's convolutions in channels-last memory layout and the
            VAE decode under bfloat16 autocast (no effect on other devices).
        compile: ``torch.compile`` the UNet in place (the first call compiles: worth it on long videos).
    Memory (same result up to float rounding):
        ff_chunks: the UNet's transformer blocks run their feed-forwards (and the temporal self-attention) on
            this many chunks of their rows: the feed-forwards' activations, the UNet's peak, shrink with it.
    """

    steps: int = DEFAULTS.steps
    seed: int = 0
    reference_guidance: float = DEFAULTS.reference_guidance
    audio_guidance: float = DEFAULTS.audio_guidance
    motion_guidance: float = 1.0
    style_strength: float = 1.0
    window: int = DEFAULTS.window
    overlap: int = DEFAULTS.overlap
    fps: float = DEFAULTS.fps
    motion_bucket_id: int = DEFAULTS.motion_bucket_id
    noise_aug_strength: float = DEFAULTS.noise_aug_strength
    decode_chunk: int = 8
    decode_context: int = DECODE_CONTEXT
    guidance_interval: tuple[float, float] | None = None
    deep_cache: int = 1
    schedule: str = "karras"
    window_batch: int = 1
    channels_last: bool = False
    bf16_decode: bool = False
    compile: bool = False
    ff_chunks: int = 1

    def __post_init__(self) -> None:
        if self.ff_chunks < 1:
            raise ValueError(f"ff_chunks must be at least 1, got {self.ff_chunks}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap ({self.overlap}) must be >= 0 and smaller than window ({self.window})")
        if self.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be at least 1, got {self.decode_chunk}")
        if self.decode_context < 0:
            raise ValueError(f"decode_context must be 0 or more, got {self.decode_context}")
        if self.guidance_interval is not None:
            low, high = (float(value) for value in self.guidance_interval)
            if not 0 <= low <= high:
                raise ValueError(f"guidance_interval needs 0 <= low <= high, got {low}, {high}")
            object.__setattr__(self, "guidance_interval", (low, high))
        if self.deep_cache < 1:
            raise ValueError(f"deep_cache must be at least 1, got {self.deep_cache}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.window_batch < 1:
            raise ValueError(f"window_batch must be at least 1, got {self.window_batch}")

    def guides_at(self, sigma: float) -> bool:
        """Whether the guidance branches run at noise level ``sigma``."""
        if self.guidance_interval is None:
            return True
        low, high = self.guidance_interval
        return low <= sigma <= high

    def replace(self, **changes) -> SamplingPlan:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SamplerOptions:
    """The sampler's settings as a user gives them (the Sampler and Lip Sync Video nodes' widgets, ``run``'s flags).

    ``None`` is ``auto``: the model file's own default (``ModelDefaults``), and for the speed settings the
    ``speed`` preset's (``SPEED_PRESETS``). ``resolve`` turns them into a ``SamplingPlan``.
    """

    steps: int | None = None
    seed: int = 0
    reference_guidance: float | None = None
    audio_guidance: float | None = None
    motion_guidance: float | None = None  # only where a mouth motion is given (or comes from a style)
    style_strength: float = 1.0
    window: int | None = None
    overlap: int | None = None
    decode_chunk: int | None = None  # auto: 8, fewer where the device's memory asks (memory.fit)
    noise_aug_strength: float | None = None  # SVD's canvas noise; must match what the model trained with
    speed: str = "quality"
    guidance_interval: tuple[float, float] | None = None
    deep_cache: int | None = None
    schedule: str | None = None
    window_batch: int | None = None
    compile: bool = False
    ff_chunks: int | None = None  # auto: 1, more where the device's memory asks (memory.fit)

    def __post_init__(self) -> None:
        if self.speed not in SPEED_PRESETS:
            raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {self.speed!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.window is not None and self.overlap is not None and not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap ({self.overlap}) must be >= 0 and smaller than window ({self.window})")
        self.resolve(ModelDefaults())  # every value given is valid (SamplingPlan checks them)

    def resolve(self, defaults: ModelDefaults, fps: float | None = None, styled: bool = False) -> SamplingPlan:
        """The plan: every ``auto`` setting from the model's ``defaults`` and the speed preset (a user value wins).

        ``fps``: the video's frame rate (None: the model's). ``styled``: a speaking style gives the motion (no
        explicit one), so ``auto`` audio guidance is the file's ``style_audio_guidance`` where it has one.
        """
        preset = SPEED_PRESETS[self.speed]
        audio_guidance = defaults.audio_guidance
        if styled and defaults.style_audio_guidance is not None:
            audio_guidance = defaults.style_audio_guidance
        window = _pick(self.window, defaults.window)
        steps = defaults.steps if preset.max_steps is None else min(defaults.steps, preset.max_steps)
        interval = self.guidance_interval
        if interval is None and self.speed != "quality":  # the model's own measured interval, else the preset's
            interval = defaults.guidance_interval or preset.guidance_interval
        return SamplingPlan(
            steps=_pick(self.steps, steps),
            seed=self.seed,
            reference_guidance=_pick(self.reference_guidance, defaults.reference_guidance),
            audio_guidance=_pick(self.audio_guidance, audio_guidance),
            motion_guidance=_pick(self.motion_guidance, defaults.motion_guidance),
            style_strength=self.style_strength,
            window=window,
            overlap=_pick(self.overlap, min(defaults.overlap, window - 1)),
            fps=float(_pick(fps, defaults.fps)),
            motion_bucket_id=defaults.motion_bucket_id,
            noise_aug_strength=_pick(self.noise_aug_strength, defaults.noise_aug_strength),
            decode_chunk=_pick(self.decode_chunk, SamplingPlan.decode_chunk),
            decode_context=preset.decode_context,
            guidance_interval=interval,
            deep_cache=_pick(self.deep_cache, preset.deep_cache),
            schedule=_pick(self.schedule, preset.schedule),
            window_batch=_pick(self.window_batch, preset.window_batch),
            channels_last=preset.gpu_layout,
            bf16_decode=preset.gpu_layout,
            compile=self.compile,
            ff_chunks=_pick(self.ff_chunks, SamplingPlan.ff_chunks),
        )

    def memory_settings_given(self) -> frozenset[str]:
        """The memory-bound settings the user gave (``memory.fit`` changes only the others)."""
        given = {"decode_chunk": self.decode_chunk, "ff_chunks": self.ff_chunks, "window_batch": self.window_batch}
        return frozenset(name for name, value in given.items() if value is not None)


@dataclass(frozen=True)
class FaceOptions:
    """Face tracking, mask and crop settings (the face nodes' widgets, the ``run`` command's flags); ``None`` is
    ``auto``: the model file's default. ``resolve`` fills them in."""

    face: str = "largest"
    face_index: int = 0
    upper_edge: str | None = None
    expand: float | None = None
    feather: float | None = None
    mask_hold: float | None = None  # seconds; see lipsync_core.face.face_masks (hold)
    user_mask_mode: str = "replace"
    crop_size: int | None = None
    model_folders: Sequence[str | os.PathLike] = ()  # where a face_landmarker.task may be (mediapipe >= 0.10.22)

    def resolve(self, defaults: ModelDefaults) -> FaceOptions:
        return dataclasses.replace(
            self,
            upper_edge=_pick(self.upper_edge, defaults.upper_edge),
            expand=_pick(self.expand, defaults.mask_expand),
            feather=_pick(self.feather, defaults.mask_feather),
            mask_hold=_pick(self.mask_hold, defaults.mask_hold),
            crop_size=_pick(self.crop_size, defaults.crop_size),
        )


DEFAULT_SPILL_BYTES = 256 << 20


@dataclass
class StreamSettings:
    """How a streaming run writes and holds things (the ``run`` command's flags)."""

    crf: float = 16.0  # x264 quality: ~16 is visually lossless, what a master wants
    preset: str = "medium"
    spill_bytes: int | None = DEFAULT_SPILL_BYTES
    spill_dir: str | None = None


class Stage(str, enum.Enum):
    """The stages of a lip-sync run (``dubbing.dub``), as progress reports name them."""

    TRACKING = "tracking"
    AUDIO_FEATURES = "audio features"
    CANVAS = "canvas"
    DENOISING = "denoising"
    WRITING = "writing"
    STYLE_REFERENCE = "style reference"  # reading a speaking-style reference clip, before the run (``run``)


ProgressCallback = Callable[[Stage, int, int], None]  # (stage, done, total; 0 = not known yet); raise to cancel


def _pick(value, default):
    return default if value is None else value
