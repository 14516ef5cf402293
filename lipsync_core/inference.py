"""The steps of a lip-sync run as the ComfyUI nodes chain them, one function each.

Each step takes and returns ComfyUI-compatible tensors (frames ``[T, H, W, 3]`` float 0..1, masks ``[T, H, W]``
0..1), so a node only converts ComfyUI's AUDIO and reports progress:

1. ``load_audio``                           speech as mono ``Audio``
2. ``fit_audio_and_frames``                 same length for frames and audio (a still image becomes a video)
3. ``load_whisper`` + ``whisper_features``  per-frame Whisper windows ``[T, L, W, D]``
4. ``track_face`` + ``face_mask``            landmarks and the adaptive editing mask
5. ``crop_faces``                            aligned square crops, their mask and the transforms
6. ``checkpoint.load`` + ``LoadedModel.encode_reference``  the model (+ VAE) and the ID-Guider features
7. ``generate``                              masked-video diffusion over the crops
8. ``paste_faces``                           crops back into the frames; outside the mask nothing changes

The whole run in one call is ``dubbing.lipsync`` (frames in memory) or ``streaming.lipsync_file`` (files).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .audio import Audio, convert_whisper, fit_audio_video, load_whisper_encoder
from .audio import load_audio as load_audio_file
from .checkpoint import LoadedModel
from .configs import ModelDefaults
from .face import align_transforms, face_masks, paste_back, prepare_face_crops, track_faces
from .media import VideoInfo, VideoReader, VideoWriter
from .memory import fit_to_device
from .motion import motion_condition
from .pipeline import decode_latents
from .plan import FaceOptions, SamplerOptions
from .style import is_styled, style_condition
from .tensors import broadcast_mask, frames_to_uint8, images_to_model, model_to_images, uint8_to_frames

StepCallback = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------------
# 1-2. audio


def load_audio(path: str | os.PathLike, start: float = 0.0, duration: float | None = None):
    """Speech from any audio or video file PyAV reads, mono 16 kHz, trimmed to ``[start, start + duration)``."""
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"start must be >= 0 and duration > 0 (or None for the rest); got {start}, {duration}")
    audio = load_audio_file(path)
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
    mask = broadcast_mask(mask, frames.shape[0], tuple(frames.shape[1:3]))
    crop = prepare_face_crops(
        frames.detach().cpu(), size=crop_size, track=track, user_mask=mask.numpy(), mask_mode="replace"
    )
    crops = uint8_to_frames(crop.crops)
    return crops, torch.from_numpy(crop.masks).float(), crop


def paste_faces(frames: torch.Tensor, crops: torch.Tensor, crop_mask: torch.Tensor, crop) -> torch.Tensor:
    """Generated crops back into the frames through the crop-space mask; where it is 0, and in frames
    that were not edited, the frames are returned bit-identical."""
    if crops.shape[0] != frames.shape[0] or len(crop.transforms) != frames.shape[0]:
        raise ValueError(
            f"{crops.shape[0]} crops and {len(crop.transforms)} crop transforms for {frames.shape[0]} frames; "
            "paste the crops of these same frames"
        )
    if tuple(frames.shape[1:3]) != tuple(crop.track.frame_size):
        raise ValueError(f"the frames are {tuple(frames.shape[1:3])} but were cropped at {crop.track.frame_size}")
    crop_mask = broadcast_mask(crop_mask, crops.shape[0], tuple(crops.shape[1:3]), "crop_mask")
    return paste_back(frames.float(), crops.float(), crop_mask.numpy(), crop.transforms, found=crop.editable)


# ------------------------------------------------------------------------------------------------
# 7. sampling


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
) -> torch.Tensor:
    """Regenerate the masked region of the crops; returns IMAGE crops ``[T, S, S, 3]``.

    ``callback(done, total)`` runs after every window of every denoising step (``total = steps *
    windows``), so progress moves and Cancel is checked within a step even on long videos.
    ``motion``: a ``lipsync_core.motion.MouthMotion`` for a model with a mouth-motion input (resampled to
    ``fps``; another length is a clear error).
    ``preview(image)``: ``preview_frame`` of a window's clean estimate (IMAGE ``[1, S, S, 3]``), at most every
    ``PREVIEW_SECONDS`` (each costs a VAE decode and a device sync: once per window it was ~5 % of a run's work).
    ``style``: a ``lipsync_core.style.StyleReference`` of this model, weighed by ``options.style_strength`` (0:
    none); for a model with a motion input and no ``motion`` it also gives the motion (``style.style_condition``).
    """
    if loaded.family != "SayAnything":  # the crop-level chain crops, masks and samples as SayAnything does
        raise ValueError(
            f"{loaded.family} models run in SayAnything Lip Sync Video (or `python -m lipsync_core run`), which crop "
            "and mask the face the way the model was trained; the Face Crop -> Sampler chain is SayAnything's."
        )
    plan = options.resolve(loaded.defaults, fps=fps, styled=is_styled(style, options.style_strength, motion))
    plan = fit_to_device(plan, options, loaded, crops.shape[1], device if device is not None else loaded.model.device,
                         motion=motion is not None or style is not None)
    num_frames = crops.shape[0]
    if audio_features.shape[0] != num_frames:
        raise ValueError(
            f"{audio_features.shape[0]} audio feature frames for {num_frames} video frames; compute the features "
            "with the frame count of these frames (SayAnything Fit Audio to Video's frame_count)"
        )
    mask = broadcast_mask(crop_mask, num_frames, tuple(crops.shape[1:3]), "crop_mask")
    pipeline = loaded.pipeline()
    latent_size = crops.shape[1] // pipeline.vae_scale_factor
    if motion is not None:
        condition = motion_condition(motion, loaded.model, num_frames, fps, latent_size)
    else:
        condition = style_condition(style, loaded.model, audio_features, fps, loaded.defaults.window, latent_size,
                                    plan.style_strength)
    generated = pipeline(
        images_to_model(crops),
        mask[:, None],
        audio_features,
        id_features=list(id_features),
        plan=plan,
        window_callback=callback,
        device=device,
        motion=condition,
        preview_callback=None if preview is None else _every(PREVIEW_SECONDS, lambda start, x0: preview(
            preview_frame(loaded.vae, x0))),
        style=None if style is None else style.for_model(loaded.model),
    )
    return model_to_images(generated)


PREVIEW_SECONDS = 1.0


def _every(seconds: float, function: Callable) -> Callable:
    """``function`` called at most every ``seconds`` (the first call always)."""
    last = [-float("inf")]

    def throttled(*args) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            function(*args)

    return throttled


def preview_frame(vae, x0: torch.Tensor) -> torch.Tensor:
    """A sampling preview: the middle frame of a window's clean estimate ``x0 [F, 4, h, w]`` decoded alone,
    IMAGE ``[1, S, S, 3]`` (one frame of VAE work per window call, a few percent of the window's UNet)."""
    middle = x0.shape[0] // 2
    return model_to_images(decode_latents(vae, x0[middle : middle + 1], chunk_size=1, context=0))


# ------------------------------------------------------------------------------------------------
# media files (the command line reads and writes them; in ComfyUI, core LoadVideo/SaveVideo do)


def read_frames(path: str | os.PathLike) -> tuple[torch.Tensor, float | None]:
    """Frames ``[T, H, W, 3]`` float 0..1 and the fps of a video, or ``[1, H, W, 3]`` and None for an image.

    The whole video in memory: for short clips (ComfyUI-style IMAGE batches); ``streaming`` reads files.
    """
    reader = VideoReader(path)
    frames = np.stack(list(reader))
    fps = float(reader.info.fps) if reader.info.fps and not reader.info.is_image else None
    return uint8_to_frames(frames), fps


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, audio=None, crf: float = 16) -> str:
    """An h264 (+ aac) mp4 of frames ``[T, H, W, 3]`` 0..1 at ``fps`` with the mono ``audio``; any size
    (odd sizes are written 4:4:4 rather than padded)."""
    pixels = frames_to_uint8(frames)
    like = VideoInfo(os.fspath(path), pixels.shape[2], pixels.shape[1], None, "yuv420p")
    samples = None if audio is None else audio.waveform.numpy()[None]
    with VideoWriter(path, like, fps, samples, None if audio is None else audio.sample_rate, crf=crf) as writer:
        for image in pixels:
            writer.write(image)
        return writer.close()
