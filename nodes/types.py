"""The pack's custom ComfyUI types and small helpers shared by the node families.

ComfyUI values: IMAGE ``[B,H,W,3]`` float 0..1 (a video is a batch of frames), MASK ``[B,H,W]``,
AUDIO ``{"waveform": [B,C,N], "sample_rate": int}``. lipsync_core takes the same frame and mask
tensors; AUDIO is converted with ``lipsync_core.audio.audio_from_comfy`` / ``audio_to_comfy``.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..lipsync_core.plan import SamplerOptions
from ..lipsync_core.speed import SCHEDULES, SPEED_PRESETS, SPEEDS

# Socket types carry the pack's prefix so no other pack's type of the same name can connect to them.
# Workflows saved before the prefix (WHISPER_FEATURES, FACE_TRACK, FACE_CROP, ID_FEATURES) still load
# and run: links are stored by slot, not by type name, and the server checks the types it defines now.
SayAnythingModel = io.Custom("SAYANYTHING_MODEL")
WhisperModel = io.Custom("SAYANYTHING_WHISPER")
WhisperFeatures = io.Custom("SAYANYTHING_WHISPER_FEATURES")
FaceTrack = io.Custom("SAYANYTHING_FACE_TRACK")
FaceCrop = io.Custom("SAYANYTHING_FACE_CROP")
IdFeatures = io.Custom("SAYANYTHING_ID_FEATURES")
MouthMotion = io.Custom("SAYANYTHING_MOUTH_MOTION")  # lipsync_core.motion.MouthMotion
SpeakingStyle = io.Custom("SAYANYTHING_STYLE")  # lipsync_core.style.StyleReference

CATEGORY = "SayAnything"
PRECISIONS = ["auto", "bf16", "fp16", "fp32"]
SEARCH_ALIASES = ["lipsync", "lip sync", "talking head", "dubbing", "whisper"]


def node_schema(**fields) -> io.Schema:
    """``io.Schema`` in the pack's category with its search aliases, where this ComfyUI's Schema has
    that field (releases after 0.3.75; older ones search names and descriptions only)."""
    if "search_aliases" in io.Schema.__dataclass_fields__:
        fields.setdefault("search_aliases", SEARCH_ALIASES)
    return io.Schema(category=CATEGORY, **fields)


def sampling_inputs() -> list:
    """The sampler's widgets shared by SayAnything Sampler and Lip Sync Video (0 / -1 = the model's own)."""
    return [
        io.Int.Input(
            "steps",
            default=0,
            min=0,
            max=200,
            tooltip="Denoising steps; 0 = the model's default (10 for SVD-sized models).",
        ),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate=True,
            tooltip="Noise seed; the same seed and inputs give the same video.",
        ),
        io.Float.Input(
            "reference_guidance",
            default=-1.0,
            min=-1.0,
            max=20.0,
            step=0.05,
            tooltip="How strongly the output follows the reference identity (1 = no extra push); -1 = the "
            "model's default.",
        ),
        io.Float.Input(
            "audio_guidance",
            default=-1.0,
            min=-1.0,
            max=20.0,
            step=0.05,
            tooltip="How strongly the lips follow the audio (1 = no extra push); -1 = the model's default (with a "
            "style reference connected, the model's default for styled runs).",
        ),
    ]


def fps_input(tooltip: str) -> io.Float.Input:
    """The frame-rate widget every node that reads frames has (25 by default, as the models train)."""
    return io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.001, tooltip=tooltip)


AUTO_SCHEDULE = "auto"


def speed_inputs() -> list:
    """The ``speed`` preset and the settings under it, shared by SayAnything Sampler and Lip Sync Video
    (last in both nodes, so workflows saved before them keep their widget values)."""
    return [
        io.Combo.Input(
            "speed",
            options=list(SPEEDS),
            default="quality",
            tooltip="quality: every guidance branch at every step (the full sampler). balanced / fast: fewer "
            "steps on a few-step schedule, guidance only where the lips are decided, deep UNet features reused "
            "between steps, several windows per call (figures in BENCHMARKS.md). The settings below override "
            "the preset.",
        ),
        io.Float.Input(
            "guidance_sigma_low",
            default=-1.0,
            min=-1.0,
            max=1000.0,
            step=0.01,
            tooltip="Guidance branches run only for noise levels from this sigma up to guidance_sigma_high "
            "(one branch elsewhere); -1 = the preset's (quality: every step).",
        ),
        io.Float.Input(
            "guidance_sigma_high",
            default=-1.0,
            min=-1.0,
            max=1000.0,
            step=0.01,
            tooltip="Upper end of the guidance interval (sigma); -1 = the preset's.",
        ),
        io.Int.Input(
            "deep_cache",
            default=0,
            min=0,
            max=10,
            tooltip="Recompute the UNet's deep blocks every this many steps and reuse them between (DeepCache); "
            "1 = every step, 0 = the preset's.",
        ),
        io.Combo.Input(
            "schedule",
            options=[AUTO_SCHEDULE, *SCHEDULES],
            default=AUTO_SCHEDULE,
            tooltip="Noise levels: karras (SVD's) or few_step (ours, for 4-8 steps); auto = the preset's.",
        ),
        io.Int.Input(
            "window_batch",
            default=0,
            min=0,
            max=64,
            tooltip="Windows denoised in one batched call (faster on a GPU, memory grows with it); 0 = the "
            "preset's.",
        ),
        io.Boolean.Input(
            "compile",
            default=False,
            tooltip="torch.compile the UNet: the first run compiles (slow), later runs are faster on a GPU.",
        ),
    ]


def style_inputs() -> list:
    """The speaking-style reference and its weight, shared by SayAnything Sampler and Lip Sync Video (optional
    and last in both nodes, so workflows saved before them keep their widget values)."""
    return [
        SpeakingStyle.Input(
            "style",
            optional=True,
            tooltip="Optional: how this person speaks (SayAnything Style Reference of a clip of the same speaker), "
            "for models trained with a style reference. For a model with a mouth-motion input it also gives the "
            "lip motion this speaker would make, unless mouth_motion is connected.",
        ),
        io.Float.Input(
            "style_strength",
            default=1.0,
            min=0.0,
            max=3.0,
            step=0.05,
            optional=True,
            tooltip="Weight of the speaking style: 1 = as trained, 0 = none, above 1 exaggerates it.",
        ),
    ]


def motion_guidance_input() -> io.Float.Input:
    """Guidance on the mouth motion, shared by SayAnything Sampler and Lip Sync Video (optional and last)."""
    return io.Float.Input(
        "motion_guidance",
        default=-1.0,
        min=-1.0,
        max=10.0,
        step=0.05,
        optional=True,
        tooltip="How strongly the lips follow a mouth motion (mouth_motion, or the one a style gives): 1 = as "
        "trained, above 1 pushes further (one more model call per step); -1 = the model's default.",
    )


def sampler_options(
    steps: int = 0,
    seed: int = 0,
    reference_guidance: float = -1.0,
    audio_guidance: float = -1.0,
    motion_guidance: float = -1.0,
    style_strength: float = 1.0,
    window: int = 0,
    overlap: int = -1,
    decode_chunk: int = SamplerOptions.decode_chunk,
    noise_aug_strength: float = -1.0,
    speed: str = "quality",
    guidance_sigma_low: float = -1.0,
    guidance_sigma_high: float = -1.0,
    deep_cache: int = 0,
    schedule: str = AUTO_SCHEDULE,
    window_batch: int = 0,
    compile: bool = False,
) -> SamplerOptions:
    """``SamplerOptions`` of the sampling widgets (``sampling_inputs``, ``speed_inputs``, ``style_inputs``,
    ``motion_guidance_input`` and the Sampler's window ones), ``auto`` values (0 / -1) as None."""
    interval = None
    if guidance_sigma_low >= 0 or guidance_sigma_high >= 0:  # one end given: the other from the preset
        low, high = SPEED_PRESETS[speed].guidance_interval or (0.0, float("inf"))
        interval = (guidance_sigma_low if guidance_sigma_low >= 0 else low,
                    guidance_sigma_high if guidance_sigma_high >= 0 else high)
    return SamplerOptions(
        steps=auto(steps, 0),
        seed=seed,
        reference_guidance=auto(reference_guidance, -1.0),
        audio_guidance=auto(audio_guidance, -1.0),
        motion_guidance=auto(motion_guidance, -1.0),
        style_strength=style_strength,
        window=auto(window, 0),
        overlap=auto(overlap, -1),
        decode_chunk=decode_chunk,
        noise_aug_strength=auto(noise_aug_strength, -1.0),
        speed=speed,
        guidance_interval=interval,
        deep_cache=auto(deep_cache, 0),
        schedule=auto(schedule, AUTO_SCHEDULE),
        window_batch=auto(window_batch, 0),
        compile=compile,
    )


def auto(value, unset):
    """A widget's ``auto`` sentinel (0 or -1) -> None, which lipsync_core fills from the model file."""
    return None if value == unset else value


def check_frames(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"{name} must be an IMAGE batch [frames, height, width, 3], got {tuple(images.shape)}")
    return images[..., :3].float()


def torch_dtype(precision: str, device: torch.device, model_params: int = 0) -> torch.dtype:
    """Resolve a precision choice; ``auto`` asks ComfyUI's model management what the device runs best."""
    import comfy.model_management as mm

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if mm.should_use_bf16(device, model_params=model_params):
        return torch.bfloat16
    if mm.should_use_fp16(device, model_params=model_params):
        return torch.float16
    return torch.float32
