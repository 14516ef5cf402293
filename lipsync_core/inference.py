"""The end-to-end lip-sync run, step by step, shared by the ComfyUI nodes and ``python -m lipsync_core run``.

Each step is one function taking and returning ComfyUI-compatible tensors (frames ``[T, H, W, 3]``
float 0..1, masks ``[T, H, W]`` 0..1) so the nodes only convert ComfyUI's AUDIO and report
progress; ``lipsync()`` chains the same steps for the command line:

1. ``load_audio`` / ``audio_from_waveform``  speech as mono ``Audio``
2. ``fit_audio_and_frames``                 same length for frames and audio (a still image becomes a video)
3. ``load_whisper`` + ``whisper_features``   per-frame Whisper windows ``[T, L, W, D]``
4. ``track_face`` + ``face_mask``            landmarks and the adaptive editing mask
5. ``crop_faces``                            aligned square crops, their mask and the transforms
6. ``load_model`` + ``encode_reference``     the SayAnything model (+ VAE) and the ID-Guider features
7. ``generate``                              masked-video diffusion over the crops
8. ``paste_faces``                           crops back into the frames; outside the mask nothing changes
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import ModelDefaults
from .speed import SPEED_PRESETS, SPEEDS, SpeedSettings

StepCallback = Callable[[int, int], None]


@dataclass
class SamplerOptions:
    """The sampler's settings (the SayAnything Sampler node's widgets, the ``run`` command's flags).

    ``None`` is ``auto``: the model file's own default (``ModelDefaults``, applied by ``resolve``), and
    for the speed settings the ``speed`` preset's (``SPEED_PRESETS``).
    """

    steps: int | None = None
    seed: int = 0
    reference_guidance: float | None = None
    audio_guidance: float | None = None
    motion_guidance: float | None = None  # only where a mouth motion is given (or comes from a style)
    window: int | None = None
    overlap: int | None = None
    decode_chunk: int = 8
    noise_aug_strength: float | None = None  # SVD's canvas noise; must match what the model trained with
    speed: str = "quality"
    guidance_interval: tuple[float, float] | None = None  # sigmas where the guidance branches run
    deep_cache: int | None = None  # deep UNet blocks every this many steps (1 = every step)
    schedule: str | None = None  # karras or few_step
    window_batch: int | None = None  # windows per batched forward
    compile: bool = False  # torch.compile the UNet (first run slower; pays off on long videos)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.window is not None and self.overlap is not None and not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap ({self.overlap}) must be >= 0 and smaller than window ({self.window})")
        if self.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be at least 1, got {self.decode_chunk}")
        if self.speed not in SPEED_PRESETS:
            raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {self.speed!r}")
        if self.guidance_interval is not None:
            self.guidance_interval = tuple(float(v) for v in self.guidance_interval)
        self.speed_settings()  # the speed settings given are valid (SpeedSettings checks them)

    def resolve(self, defaults: ModelDefaults, styled: bool = False) -> SamplerOptions:
        """Every ``auto`` setting filled in from the model's defaults and the speed preset (a user value wins).
        ``styled``: a speaking style gives the motion (no explicit one), so ``auto`` audio guidance is the file's
        ``style_audio_guidance`` where it has one."""
        preset = SPEED_PRESETS[self.speed]
        audio_guidance = defaults.audio_guidance
        if styled and defaults.style_audio_guidance is not None:
            audio_guidance = defaults.style_audio_guidance
        window = self.window if self.window is not None else defaults.window
        overlap = self.overlap if self.overlap is not None else min(defaults.overlap, window - 1)
        steps = defaults.steps if preset.max_steps is None else min(defaults.steps, preset.max_steps)
        interval = self.guidance_interval
        if interval is None and self.speed != "quality":  # the model's own measured interval, else the preset's
            interval = defaults.guidance_interval or preset.guidance_interval
        return dataclasses.replace(
            self,
            steps=_pick(self.steps, steps),
            reference_guidance=_pick(self.reference_guidance, defaults.reference_guidance),
            audio_guidance=_pick(self.audio_guidance, audio_guidance),
            motion_guidance=_pick(self.motion_guidance, defaults.motion_guidance),
            window=window,
            overlap=overlap,
            noise_aug_strength=_pick(self.noise_aug_strength, defaults.noise_aug_strength),
            guidance_interval=interval,
            deep_cache=_pick(self.deep_cache, preset.deep_cache),
            schedule=_pick(self.schedule, preset.schedule),
            window_batch=_pick(self.window_batch, preset.window_batch),
        )

    def speed_settings(self) -> SpeedSettings:
        """The pipeline's ``SpeedSettings`` of these options (auto speed settings: the preset's)."""
        preset = SPEED_PRESETS[self.speed]
        interval = self.guidance_interval
        if interval is None and self.speed != "quality":
            interval = preset.guidance_interval
        return SpeedSettings(
            guidance_interval=interval,
            deep_cache_interval=_pick(self.deep_cache, preset.deep_cache),
            schedule=_pick(self.schedule, preset.schedule),
            window_batch=_pick(self.window_batch, preset.window_batch),
            channels_last=preset.gpu_layout,
            bf16_decode=preset.gpu_layout,
            compile=self.compile,
            decode_context=preset.decode_context,
        )


@dataclass
class FaceOptions:
    """Face tracking, mask and crop settings (the face nodes' widgets, the ``run`` command's flags);
    ``None`` is ``auto``: the model file's default."""

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


def _pick(value, default):
    return default if value is None else value


# ------------------------------------------------------------------------------------------------
# conversions


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """IMAGE ``[T, H, W, 3]`` float 0..1 -> numpy uint8 RGB (the face modules' layout)."""
    return (frames[..., :3].clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def images_to_model(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[T, S, S, 3]`` 0..1 -> model input ``[T, 3, S, S]`` in -1..1."""
    return images[..., :3].permute(0, 3, 1, 2).float() * 2.0 - 1.0


def model_to_images(frames: torch.Tensor) -> torch.Tensor:
    """Model output ``[T, 3, S, S]`` in -1..1 -> IMAGE ``[T, S, S, 3]`` 0..1."""
    return ((frames.float().cpu() + 1.0) / 2.0).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def broadcast_mask(mask: torch.Tensor, num_frames: int, size: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """A MASK of one frame or one per frame -> ``[T, H, W]`` float; clear errors for other shapes."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{name} must be [frames, height, width], got {tuple(mask.shape)}")
    if tuple(mask.shape[1:]) != tuple(size):
        raise ValueError(
            f"{name} is {mask.shape[2]}x{mask.shape[1]} but the frames are {size[1]}x{size[0]}; "
            "draw or resize the mask at the frame size"
        )
    if mask.shape[0] == 1:
        mask = mask.expand(num_frames, *size)
    if mask.shape[0] != num_frames:
        raise ValueError(
            f"{name} has {mask.shape[0]} frames but the video has {num_frames}; give one mask or one per frame"
        )
    return mask.float().clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# 1-2. audio


def load_audio(path: str | os.PathLike, start: float = 0.0, duration: float | None = None):
    """Speech from any audio or video file PyAV reads, mono 16 kHz, trimmed to ``[start, start + duration)``."""
    from .audio import Audio
    from .audio import load_audio as load

    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0 (or None for the rest); got {start}, {duration}")
    audio = load(path)
    first = round(start * audio.sample_rate)
    if first >= audio.num_samples:
        raise ValueError(f"{path} is {audio.duration:.2f} s long; start {start:.2f} s is past its end")
    last = audio.num_samples
    if duration is not None:
        last = min(last, first + round(duration * audio.sample_rate))
    return Audio(audio.waveform[first:last], audio.sample_rate)


def fit_audio_and_frames(frames: torch.Tensor, audio, fps: float, mode: str = "loop"):
    """Make frames and audio the same length (``lipsync_core.audio.fit_audio_video`` modes).

    One frame (a still image) is held for as long as the audio in every mode but ``cut``.
    Returns ``(frames [T', H, W, 3], audio)``.
    """
    from .audio import fit_audio_video

    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    fitted = fit_audio_video(audio, frames.shape[0], fps=fps, mode=mode)
    return select_frames(frames, fitted.frame_indices), fitted.audio


def select_frames(frames: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
    """``frames[indices]`` without a copy where a view will do: a cut (the first frames) or a held still."""
    if np.array_equal(indices, np.arange(len(indices))):
        return frames[: len(indices)]
    if frames.shape[0] == 1:
        return frames.expand(len(indices), *frames.shape[1:])
    return frames[torch.from_numpy(indices)]


# ------------------------------------------------------------------------------------------------
# 3. Whisper


def load_whisper(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A ``WhisperAudioEncoder`` (a torch module) from a transformers Whisper folder.

    An openai-whisper ``.pt`` file or a CTranslate2 (faster-whisper) folder is converted once into a
    transformers folder next to it, ``<name>-transformers`` (reused afterwards; the original is untouched).
    """
    from .audio import convert_whisper, load_whisper_encoder

    path = Path(path)
    # CTranslate2 folders hold model.bin (and a config.json of their own); openai checkpoints are files.
    if path.is_file() or (path / "model.bin").is_file():
        converted = path.with_name(f"{path.stem}-transformers")
        if not (converted / "config.json").is_file():
            convert_whisper(path, converted)
        path = converted
    return load_whisper_encoder(path, device=device, dtype=dtype)


def whisper_features(
    whisper, audio, fps: float, frame_count: int, window: int = 10, progress: StepCallback | None = None
) -> torch.Tensor:
    """Per-frame Whisper windows ``[frame_count, L, window, D]`` (float32, CPU)."""
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    return whisper.frame_features(audio, fps, num_frames=frame_count, window=window, progress=progress).float().cpu()


# ------------------------------------------------------------------------------------------------
# 4-5. face


def track_face(
    frames: torch.Tensor,
    fps: float,
    face: str = "largest",
    face_index: int = 0,
    model_folders: Sequence[str | os.PathLike] = (),
    progress: StepCallback | None = None,
):
    """Landmarks of one face through the frames (``lipsync_core.face.FaceTrack``).

    ``model_folders``: where a ``face_landmarker.task`` file may be (needed only by mediapipe >= 0.10.22).
    Frames without the face are marked not found (``crop_faces`` raises the one clear error when no
    frame has a face and no user mask says where to edit).
    """
    from .face import track_faces

    total = frames.shape[0]
    if total > 1 and frames.stride(0) == 0:  # a held still (select_frames' view): one image to track
        one = track_faces(
            [frames_to_uint8(frames[0])], fps=fps, select=face, face_index=face_index, model_folders=model_folders
        )
        if progress is not None:
            progress(total, total)
        return one.select(np.zeros(total, dtype=np.int64))
    return track_faces(
        (frames_to_uint8(frame) for frame in frames),
        fps=fps,
        select=face,
        face_index=face_index,
        model_folders=model_folders,
        progress=None if progress is None else (lambda done: progress(done, total)),
    )


def face_mask(
    track,
    fps: float,
    options: FaceOptions | None = None,
    user_mask: torch.Tensor | None = None,
    frames: Sequence[int] | None = None,
    defaults: ModelDefaults | None = None,
) -> torch.Tensor:
    """The adaptive lower-face mask ``[T, H, W]``, held in time (``options.mask_hold`` seconds, taken in the
    aligned crop so it does not open and close with the source jaw); a user MASK may ``replace`` it, or
    ``intersect`` / ``union`` with it. ``frames``: only those frames (streaming). ``defaults``: the model
    file's, for the options left on ``auto`` (``None``: ``ModelDefaults()``)."""
    from .face import align_transforms, face_masks

    options = (options or FaceOptions()).resolve(defaults or ModelDefaults())
    user = None
    if user_mask is not None:
        user = broadcast_mask(user_mask, len(track.found), tuple(track.frame_size), "user_mask").numpy()
        if frames is not None:
            user = user[np.asarray(frames)]
    hold = int(round(options.mask_hold * float(fps)))
    # The hold is carried through the crop; any crop size gives the same frame-space outlines.
    transforms = align_transforms(track) if hold > 0 and track.any_found else None
    masks = face_masks(
        track,
        upper_edge=options.upper_edge,
        expand=options.expand,
        feather=options.feather,
        user_mask=user,
        mode=options.user_mask_mode if user is not None else "auto",
        hold=hold,
        transforms=transforms,
        frames=frames,
    )
    return torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))


def draw_face_preview(frames: torch.Tensor, mask: torch.Tensor, track, max_side: int = 512) -> torch.Tensor:
    """Frames with the mask tinted red and the landmarks drawn green, for checking the track at a glance;
    at most ``max_side`` pixels on the long side (a preview, not another copy of the video)."""
    import cv2

    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    preview = torch.empty(frames.shape[0], size[1], size[0], 3)
    red = np.array([1.0, 0.0, 0.0], np.float32)
    for index in range(frames.shape[0]):
        frame = cv2.resize(frames[index, ..., :3].float().numpy(), size, interpolation=cv2.INTER_AREA)
        alpha = 0.5 * cv2.resize(mask[index].float().numpy(), size, interpolation=cv2.INTER_AREA)[..., None]
        frame = frame * (1 - alpha) + red * alpha
        points = track.landmarks[index]
        points = (points[np.isfinite(points).all(axis=1)] * scale).round().astype(int)
        inside = (points[:, 0] >= 0) & (points[:, 0] < size[0]) & (points[:, 1] >= 0) & (points[:, 1] < size[1])
        frame[points[inside, 1], points[inside, 0]] = (0.0, 1.0, 0.0)
        preview[index] = torch.from_numpy(frame)
    return preview


def crop_faces(frames: torch.Tensor, mask: torch.Tensor, track, crop_size: int = ModelDefaults.crop_size):
    """Aligned crops ``[T, S, S, 3]`` 0..1, the frame-space ``mask`` warped into them ``[T, S, S]``, and
    ``lipsync_core.face.FaceCrops`` (transforms, editable frames) for ``paste_faces``.

    Any MASK works (the face node's, SAM's, a painted one); frames where the track lost the face but
    the mask marks a region are framed around the mask.
    """
    from .face import prepare_face_crops

    mask = broadcast_mask(mask, frames.shape[0], tuple(frames.shape[1:3]))
    crop = prepare_face_crops(
        frames.detach().cpu(), size=crop_size, track=track, user_mask=mask.numpy(), mask_mode="replace"
    )
    crops = torch.from_numpy(crop.crops).float() / 255.0
    return crops, torch.from_numpy(crop.masks).float(), crop


def paste_faces(frames: torch.Tensor, crops: torch.Tensor, crop_mask: torch.Tensor, crop) -> torch.Tensor:
    """Generated crops back into the frames through the crop-space mask; where it is 0, and in frames
    that were not edited, the frames are returned bit-identical."""
    from .face import paste_back

    if crops.shape[0] != frames.shape[0] or len(crop.transforms) != frames.shape[0]:
        raise ValueError(
            f"{crops.shape[0]} crops and {len(crop.transforms)} crop transforms for {frames.shape[0]} frames; "
            "paste the crops of these same frames"
        )
    if tuple(frames.shape[1:3]) != tuple(crop.track.frame_size):
        raise ValueError(f"the frames are {tuple(frames.shape[1:3])} but were cropped at {crop.track.frame_size}")
    crop_mask = broadcast_mask(crop_mask, crops.shape[0], tuple(crops.shape[1:3]), "crop_mask")
    return paste_back(frames.float(), crops.float(), crop_mask.numpy(), crop.transforms, found=crop.editable)


def paste_faces_into(
    frames: np.ndarray, crops: torch.Tensor, crop_mask: torch.Tensor, transforms: np.ndarray, found: np.ndarray
) -> np.ndarray:
    """``paste_faces`` for a chunk of uint8 frames ``[F, H, W, 3]`` (streaming): the same arithmetic, uint8 out."""
    from .face import paste_back

    pixels = torch.from_numpy(frames).float() / 255.0
    return frames_to_uint8(
        paste_back(pixels, crops.float(), crop_mask.float().numpy(), transforms, found=found, inplace=True)
    )


# ------------------------------------------------------------------------------------------------
# 6-7. model


@dataclass
class LoadedModel:
    """A SayAnything model with the VAE it decodes with (what the Model Loader node outputs)."""

    model: Any  # SayAnythingModel
    vae: Any  # diffusers AutoencoderKLTemporalDecoder
    path: str

    @property
    def defaults(self) -> ModelDefaults:
        """What the model file says it wants at inference (``ModelDefaults()`` for files without them)."""
        return getattr(self.model, "defaults", None) or ModelDefaults()


def load_model(
    path: str | os.PathLike,
    svd_path: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """A SayAnything checkpoint plus its VAE: from the file itself, or from an SVD single-file checkpoint."""
    from .checkpoint import load_checkpoint

    model, vae = load_checkpoint(path, device=device, dtype=dtype)
    if svd_path is not None:
        from .svd_import import load_svd_vae

        vae = load_svd_vae(svd_path, device=device, dtype=dtype)
    if vae is None:
        raise ValueError(
            f"{path} holds no VAE; choose your SVD checkpoint (svd_xt.safetensors in models/checkpoints) "
            "so its VAE is used"
        )
    return LoadedModel(model=model, vae=vae.eval(), path=str(path))


def model_torch_module(loaded: LoadedModel) -> torch.nn.Module:
    """One module holding every weight of a loaded model (for ComfyUI's model management)."""
    return torch.nn.ModuleDict({"model": loaded.model, "vae": loaded.vae})


def encode_reference(loaded: LoadedModel, reference: torch.Tensor) -> list[torch.Tensor]:
    """ID-Guider features of one reference IMAGE ``[1, S, S, 3]`` (computed once per video)."""
    with torch.no_grad():
        features = loaded.model.encode_reference(images_to_model(reference))
    return [feature.detach().cpu() for feature in features]


def generate(
    loaded: LoadedModel,
    crops: torch.Tensor,
    crop_mask: torch.Tensor,
    audio_features: torch.Tensor,
    id_features: Sequence[torch.Tensor],
    options: SamplerOptions,
    fps: float,
    device: str | torch.device | None = None,
    callback: StepCallback | None = None,
    motion=None,
    preview: Callable[[torch.Tensor], None] | None = None,
    style=None,
    style_strength: float = 1.0,
) -> torch.Tensor:
    """Regenerate the masked region of the crops; returns IMAGE crops ``[T, S, S, 3]``.

    ``callback(done, total)`` runs after every window of every denoising step (``total = steps *
    windows``), so progress moves and Cancel is checked within a step even on long videos.
    ``motion``: a ``lipsync_core.motion.MouthMotion`` for a model with a mouth-motion input (resampled to
    ``fps``; another length is a clear error).
    ``preview(image)``: after every window, ``preview_frame`` of its clean estimate (IMAGE ``[1, S, S, 3]``).
    ``style``: a ``lipsync_core.style.StyleReference`` of this model, weighted by ``style_strength`` (0: none);
    for a model with a motion input and no ``motion`` it also gives the motion (``style.style_condition``).
    """
    from .pipeline import SayAnythingPipeline
    from .style import is_styled

    options = options.resolve(loaded.defaults, styled=is_styled(style, style_strength, motion))
    num_frames = crops.shape[0]
    if audio_features.shape[0] != num_frames:
        raise ValueError(
            f"{audio_features.shape[0]} audio feature frames for {num_frames} video frames; compute the features "
            "with the frame count of these frames (SayAnything Fit Audio to Video's frame_count)"
        )
    mask = broadcast_mask(crop_mask, num_frames, tuple(crops.shape[1:3]), "crop_mask")
    pipeline = SayAnythingPipeline(loaded.model, loaded.vae)
    latent_size = crops.shape[1] // pipeline.vae_scale_factor
    if motion is not None:
        from .motion import motion_condition

        condition = motion_condition(motion, loaded.model, num_frames, fps, latent_size)
    else:
        from .style import style_condition

        condition = style_condition(style, loaded.model, audio_features, fps, loaded.defaults.window, latent_size,
                                    style_strength)
    generated = pipeline(
        images_to_model(crops),
        mask[:, None],
        audio_features,
        id_features=list(id_features),
        num_inference_steps=options.steps,
        reference_guidance_scale=options.reference_guidance,
        audio_guidance_scale=options.audio_guidance,
        window_length=options.window,
        window_overlap=options.overlap,
        fps=fps,
        motion_bucket_id=loaded.defaults.motion_bucket_id,
        noise_aug_strength=options.noise_aug_strength,
        seed=options.seed,
        decode_chunk_size=options.decode_chunk,
        window_callback=callback,
        device=device,
        motion=condition,
        speed=options.speed_settings(),
        preview_callback=None if preview is None else (lambda start, x0: preview(preview_frame(loaded.vae, x0))),
        style=None if style is None else style.for_model(loaded.model),
        style_scale=style_strength,
        motion_guidance_scale=options.motion_guidance,
    )
    return model_to_images(generated)


def preview_frame(vae, x0: torch.Tensor) -> torch.Tensor:
    """A sampling preview: the middle frame of a window's clean estimate ``x0 [F, 4, h, w]`` decoded alone,
    IMAGE ``[1, S, S, 3]`` (one frame of VAE work per window call, a few percent of the window's UNet)."""
    from .pipeline import decode_latents

    middle = x0.shape[0] // 2
    return model_to_images(decode_latents(vae, x0[middle : middle + 1], chunk_size=1, context=0))


# ------------------------------------------------------------------------------------------------
# the whole run (the command line's front end; the nodes call the steps one by one)


def lipsync(
    frames: torch.Tensor,
    fps: float,
    audio,
    loaded: LoadedModel,
    whisper,
    options: SamplerOptions | None = None,
    face_options: FaceOptions | None = None,
    fit_mode: str = "loop",
    reference_index: int = 0,
    user_mask: torch.Tensor | None = None,
    track=None,
    device: str | torch.device | None = None,
    callback: StepCallback | None = None,
    motion=None,
    style=None,
    style_strength: float = 1.0,
):
    """Steps 2-8 on frames ``[T, H, W, 3]`` 0..1 (or one image) and speech; returns ``(frames, audio, mask)``.

    Settings left ``None`` come from the model file's defaults. ``motion``: a ``MouthMotion`` (e.g. of a
    driving video), moved onto this face's mouth, for a model with a mouth-motion input. ``style``: a
    ``StyleReference`` (``lipsync_core.style``) of the speaker, weighted by ``style_strength``; its motion is
    drawn around this face's mouth too (``style.target_style``). ``track`` (a
    ``lipsync_core.face.FaceTrack``
    of the given frames) replaces mediapipe tracking, for faces another tracker found or landmarks known
    in advance (the toy world's drawn characters). ``lipsync_core.streaming.lipsync_file`` does the same
    from file to file in bounded memory, and gives the same frames.
    """
    defaults = loaded.defaults
    from .style import is_styled

    options = (options or SamplerOptions()).resolve(defaults, styled=is_styled(style, style_strength, motion))
    face_options = (face_options or FaceOptions()).resolve(defaults)
    if track is None:  # tracked before fitting: a looped video is tracked once
        track = track_face(
            frames,
            fps,
            face=face_options.face,
            face_index=face_options.face_index,
            model_folders=face_options.model_folders,
        )
    elif len(track.found) != frames.shape[0]:
        raise ValueError(f"the face track has {len(track.found)} frames but the video has {frames.shape[0]}")
    from .audio import fit_audio_video

    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    fitted = fit_audio_video(audio, frames.shape[0], fps=fps, mode=fit_mode)
    frames, audio = select_frames(frames, fitted.frame_indices), fitted.audio
    track = track.select(fitted.frame_indices)
    features = whisper_features(whisper, audio, fps=fps, frame_count=frames.shape[0], window=defaults.feature_window)
    mask = face_mask(track, fps, face_options, user_mask=user_mask)
    crops, crop_mask, crop = crop_faces(frames, mask, track, crop_size=face_options.crop_size)
    reference = crops[min(reference_index, crops.shape[0] - 1)][None]
    id_features = encode_reference(loaded, reference)
    if motion is not None:
        from .motion import target_motion

        motion = target_motion(motion, track, fps)
    from .style import target_style

    style = target_style(style, track, fps)
    generated = generate(
        loaded, crops, crop_mask, features, id_features, options, fps=fps, device=device, callback=callback,
        motion=motion, style=style, style_strength=style_strength,
    )
    return paste_faces(frames, generated, crop_mask, crop), audio, mask


# ------------------------------------------------------------------------------------------------
# media files (the command line reads and writes them; in ComfyUI, core LoadVideo/SaveVideo do)


def read_frames(path: str | os.PathLike) -> tuple[torch.Tensor, float | None]:
    """Frames ``[T, H, W, 3]`` float 0..1 and the fps of a video, or ``[1, H, W, 3]`` and None for an image.

    The whole video in memory: for short clips (ComfyUI-style IMAGE batches); ``streaming`` reads files.
    """
    from .media import VideoReader

    reader = VideoReader(path)
    frames = np.stack(list(reader))
    fps = float(reader.info.fps) if reader.info.fps and not reader.info.is_image else None
    return torch.from_numpy(frames).float() / 255.0, fps


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, audio=None, crf: float = 16) -> str:
    """An h264 (+ aac) mp4 of frames ``[T, H, W, 3]`` 0..1 at ``fps`` with the mono ``audio``; any size
    (odd sizes are written 4:4:4 rather than padded)."""
    from .media import VideoInfo, VideoWriter

    pixels = frames_to_uint8(frames)
    like = VideoInfo(os.fspath(path), pixels.shape[2], pixels.shape[1], None, "yuv420p")
    samples = None if audio is None else audio.waveform.numpy()[None]
    with VideoWriter(path, like, fps, samples, None if audio is None else audio.sample_rate, crf=crf) as writer:
        for image in pixels:
            writer.write(image)
        return writer.close()
