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

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

StepCallback = Callable[[int, int], None]


@dataclass
class SamplerOptions:
    """The sampler's settings (the SayAnything Sampler node's widgets, the ``run`` command's flags)."""

    steps: int = 10
    seed: int = 0
    reference_guidance: float = 2.0
    audio_guidance: float = 4.0
    window: int = 14
    overlap: int = 4
    decode_chunk: int = 8

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap ({self.overlap}) must be >= 0 and smaller than window ({self.window})")
        if self.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be at least 1, got {self.decode_chunk}")


@dataclass
class FaceCropResult:
    """What ``crop_faces`` hands to ``paste_faces``: the transforms and the frame geometry."""

    transforms: np.ndarray  # [T, 2, 3] frame -> crop (cv2.warpAffine convention)
    crop_size: int
    frame_size: tuple[int, int]
    found: np.ndarray  # [T] bool


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
        raise ValueError(f"{name} has {mask.shape[0]} frames but the video has {num_frames}; give one mask or one per frame")
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
    last = audio.num_samples if duration is None else min(audio.num_samples, first + round(duration * audio.sample_rate))
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
    return frames[torch.from_numpy(fitted.frame_indices)], fitted.audio


# ------------------------------------------------------------------------------------------------
# 3. Whisper


def load_whisper(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A ``WhisperAudioEncoder`` (a torch module) from a transformers Whisper folder."""
    from .audio import load_whisper_encoder

    return load_whisper_encoder(folder, device=device, dtype=dtype)


def whisper_features(whisper, audio, fps: float, frame_count: int, window: int = 10,
                     progress: StepCallback | None = None) -> torch.Tensor:
    """Per-frame Whisper windows ``[frame_count, L, window, D]`` (float32, CPU)."""
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    return whisper.frame_features(audio, fps, num_frames=frame_count, window=window, progress=progress).float().cpu()


# ------------------------------------------------------------------------------------------------
# 4-5. face


def track_face(frames: torch.Tensor, fps: float, face: str = "largest", face_index: int = 0,
               model_folders: Sequence[str | os.PathLike] = (), progress: StepCallback | None = None):
    """Landmarks of one face through the frames (``lipsync_core.face.FaceTrack``).

    ``model_folders``: where a ``face_landmarker.task`` file may be (needed only by mediapipe >= 0.10.22).
    Frames without the face are marked not found; a video with no face at all is an error.
    """
    from .face import track_faces

    total = frames.shape[0]
    track = track_faces(frames_to_uint8(frames), fps=fps, select=face, face_index=face_index,
                        model_folders=model_folders,
                        progress=None if progress is None else (lambda done: progress(done, total)))
    if not track.found.any():
        raise ValueError(
            f"No face was found in any of the {total} frames. SayAnything needs a visible face (frontal or "
            "three-quarter, at least about 64 px wide); check the input, or crop the video to the face."
        )
    return track


def face_mask(track, upper_edge: str = "nose", expand: float = 0.08, feather: float = 0.06,
              user_mask: torch.Tensor | None = None, user_mask_mode: str = "replace") -> torch.Tensor:
    """The adaptive lower-face mask ``[T, H, W]``; a user MASK may ``replace`` it, or ``intersect`` / ``union``."""
    from .face import face_masks

    user = None
    if user_mask is not None:
        user = broadcast_mask(user_mask, len(track.found), tuple(track.frame_size), "user_mask").numpy()
    masks = face_masks(track, upper_edge=upper_edge, expand=expand, feather=feather, user_mask=user,
                       mode=user_mask_mode if user is not None else "auto")
    return torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))


def draw_face_preview(frames: torch.Tensor, mask: torch.Tensor, track) -> torch.Tensor:
    """Frames with the mask tinted red and the landmarks drawn green, for checking the track at a glance."""
    alpha = 0.5 * mask[..., None].float()
    preview = frames[..., :3].float() * (1 - alpha) + torch.tensor([1.0, 0.0, 0.0]) * alpha
    height, width = preview.shape[1:3]
    for index, points in enumerate(np.asarray(track.landmarks)):
        points = points[np.isfinite(points).all(axis=1)].round().astype(int)
        inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
        points = torch.from_numpy(points[inside])
        preview[index, points[:, 1], points[:, 0]] = torch.tensor([0.0, 1.0, 0.0])
    return preview


def crop_faces(frames: torch.Tensor, mask: torch.Tensor, track, crop_size: int = 512):
    """Aligned crops ``[T, S, S, 3]`` 0..1, their mask ``[T, S, S]`` and a ``FaceCropResult`` for ``paste_faces``."""
    from .face import align_transforms, warp_to_crop

    mask = broadcast_mask(mask, frames.shape[0], tuple(frames.shape[1:3]))
    transforms = align_transforms(track, size=crop_size)
    crops = torch.from_numpy(warp_to_crop(frames_to_uint8(frames), transforms, size=crop_size)).float() / 255.0
    crop_mask = torch.from_numpy(warp_to_crop(mask.numpy(), transforms, size=crop_size)).float().clamp(0, 1)
    info = FaceCropResult(transforms, crop_size, tuple(frames.shape[1:3]), np.asarray(track.found))
    return crops, crop_mask, info


def paste_faces(frames: torch.Tensor, crops: torch.Tensor, crop_mask: torch.Tensor, crop: FaceCropResult) -> torch.Tensor:
    """Generated crops back into the frames through the crop-space mask; where it is 0, and in frames
    without a face, the frames are returned bit-identical."""
    from .face import paste_back

    if crops.shape[0] != frames.shape[0] or len(crop.transforms) != frames.shape[0]:
        raise ValueError(
            f"{crops.shape[0]} crops and {len(crop.transforms)} crop transforms for {frames.shape[0]} frames; "
            "paste the crops of these same frames"
        )
    if tuple(frames.shape[1:3]) != tuple(crop.frame_size):
        raise ValueError(f"the frames are {tuple(frames.shape[1:3])} but were cropped at {crop.frame_size}")
    crop_mask = broadcast_mask(crop_mask, crops.shape[0], tuple(crops.shape[1:3]), "crop_mask")
    return paste_back(frames.float(), crops.float(), crop_mask.numpy(), crop.transforms, found=crop.found)


# ------------------------------------------------------------------------------------------------
# 6-7. model


@dataclass
class LoadedModel:
    """A SayAnything model with the VAE it decodes with (what the Model Loader node outputs)."""

    model: Any  # SayAnythingModel
    vae: Any  # diffusers AutoencoderKLTemporalDecoder
    path: str


def load_model(path: str | os.PathLike, svd_path: str | os.PathLike | None = None,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoadedModel:
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


def generate(loaded: LoadedModel, crops: torch.Tensor, crop_mask: torch.Tensor, audio_features: torch.Tensor,
             id_features: Sequence[torch.Tensor], options: SamplerOptions, fps: float,
             device: str | torch.device | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Regenerate the masked region of the crops; returns IMAGE crops ``[T, S, S, 3]``."""
    from .pipeline import SayAnythingPipeline

    num_frames = crops.shape[0]
    if audio_features.shape[0] != num_frames:
        raise ValueError(
            f"{audio_features.shape[0]} audio feature frames for {num_frames} video frames; compute the features "
            "with the frame count of these frames (SayAnything Fit Audio to Video's frame_count)"
        )
    mask = broadcast_mask(crop_mask, num_frames, tuple(crops.shape[1:3]), "crop_mask")
    pipeline = SayAnythingPipeline(loaded.model, loaded.vae)
    step_callback = None if callback is None else (lambda step, total, _latents: callback(step, total))
    generated = pipeline(
        images_to_model(crops), mask[:, None], audio_features, id_features=list(id_features),
        num_inference_steps=options.steps, reference_guidance_scale=options.reference_guidance,
        audio_guidance_scale=options.audio_guidance, window_length=options.window, window_overlap=options.overlap,
        fps=fps, seed=options.seed, decode_chunk_size=options.decode_chunk, callback=step_callback, device=device,
    )
    return model_to_images(generated)


# ------------------------------------------------------------------------------------------------
# the whole run (the command line's front end; the nodes call the steps one by one)


@dataclass
class FaceOptions:
    """Face tracking, mask and crop settings (the face nodes' widgets, the ``run`` command's flags)."""

    face: str = "largest"
    face_index: int = 0
    upper_edge: str = "nose"
    expand: float = 0.08
    feather: float = 0.06
    user_mask_mode: str = "replace"
    crop_size: int = 512


def lipsync(frames: torch.Tensor, fps: float, audio, loaded: LoadedModel, whisper, options: SamplerOptions,
            face_options: FaceOptions | None = None, fit_mode: str = "loop", feature_window: int = 10,
            reference_index: int = 0, user_mask: torch.Tensor | None = None,
            device: str | torch.device | None = None, callback: StepCallback | None = None):
    """Steps 2-8 on frames ``[T, H, W, 3]`` 0..1 (or one image) and speech; returns ``(frames, audio, mask)``."""
    face_options = face_options or FaceOptions()
    frames, audio = fit_audio_and_frames(frames, audio, fps=fps, mode=fit_mode)
    features = whisper_features(whisper, audio, fps=fps, frame_count=frames.shape[0], window=feature_window)
    track = track_face(frames, fps, face=face_options.face, face_index=face_options.face_index)
    mask = face_mask(track, upper_edge=face_options.upper_edge, expand=face_options.expand,
                     feather=face_options.feather, user_mask=user_mask, user_mask_mode=face_options.user_mask_mode)
    crops, crop_mask, crop = crop_faces(frames, mask, track, crop_size=face_options.crop_size)
    reference = crops[min(reference_index, crops.shape[0] - 1)][None]
    id_features = encode_reference(loaded, reference)
    generated = generate(loaded, crops, crop_mask, features, id_features, options, fps=fps, device=device,
                         callback=callback)
    return paste_faces(frames, generated, crop_mask, crop), audio, mask


# ------------------------------------------------------------------------------------------------
# media files (the command line reads and writes them; in ComfyUI, core LoadVideo/SaveVideo do)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def read_frames(path: str | os.PathLike) -> tuple[torch.Tensor, float | None]:
    """Frames ``[T, H, W, 3]`` float 0..1 and the fps of a video, or ``[1, H, W, 3]`` and None for an image."""
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Video or image file not found: {path}")
    if os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES:
        import cv2

        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"Could not read the image {path}")
        return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).float()[None] / 255.0, None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.FFmpegError as error:
        raise ValueError(f"Could not read {path} as a video ({error})") from error
    if not frames:
        raise ValueError(f"{path} contains no video frames")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: float, audio=None) -> str:
    """An h264 (+ aac) mp4 of frames ``[T, H, W, 3]`` 0..1 at ``fps`` with the mono ``audio``."""
    from fractions import Fraction

    import av

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    pixels = frames_to_uint8(frames)
    height, width = pixels.shape[1:3]
    # yuv420p needs even sizes: pad one pixel row/column by repeating the edge.
    pixels = np.pad(pixels, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    partial = path + ".partial.mp4"
    with av.open(partial, mode="w") as container:
        video = container.add_stream("h264", rate=rate)
        video.width, video.height, video.pix_fmt = pixels.shape[2], pixels.shape[1], "yuv420p"
        video.time_base = 1 / rate
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=audio.sample_rate, layout="mono")
        for index, image in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio_stream is not None:
            samples = audio.waveform.numpy().astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = audio.sample_rate
            frame.pts = 0
            container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode())
    os.replace(partial, path)
    return path
