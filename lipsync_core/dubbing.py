"""The lip-sync run: one sequence of stages from source frames to edited frames, for every front end.

1. tracking        the face's landmarks through the source (pixels dropped), or a given track
2. audio features  lengths fitted; per-frame audio features written as the encoder goes
3. canvas          crop + held mask per chunk -> the model's canvas latents; the reference crop on the way
4. denoising       latents only (windows blended at every step)
5. writing         latents decoded per chunk -> composited, pasted into the re-read source frames -> the sink

The frames come from a ``FrameSource`` and go to a ``FrameSink``: ``lipsync`` below holds them as tensors (the
command line's and the tests' in-memory front end), ``streaming.lipsync_file`` reads and writes video files
(``run``, the Lip Sync Video node), so the two cannot drift. What grows with the video's length is small
per-frame state (landmarks, transforms, latents, audio features) in arrays from ``buffer``, which a front end
may spill to disk. The model is used only through ``checkpoint.LoadedModel``'s interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import torch

from .audio import Audio, fit_audio_video
from .checkpoint import LoadedModel
from .face import FaceTrack, paste_back, track_faces, warp_to_crop
from .inference import face_mask
from .memory import fit_to_device
from .motion import motion_condition, require_motion_input, target_motion
from .pipeline import composite
from .plan import FaceOptions, ProgressCallback, SamplerOptions, SamplingPlan, Stage
from .style import StyleReference, is_styled, style_condition, target_style
from .tensors import broadcast_mask, frames_to_uint8, images_to_model, model_to_images, uint8_to_frames


class FrameSource(Protocol):
    """The source video: ``frames(None)`` every frame in order (the first pass, which also counts them for a
    file), ``frames(indices)`` those frames in that order. A frame is uint8 ``[H, W, 3]`` or IMAGE float
    ``[H, W, 3]``; ``num_frames`` is known after the first pass."""

    frame_size: tuple[int, int]

    @property
    def num_frames(self) -> int: ...

    def frames(self, indices: Sequence[int] | None) -> Iterator: ...


@dataclass
class EditedChunk:
    """Output frames ``[start, start + F)``: the source frames they are pasted into (as the source gave them),
    the edited crops IMAGE ``[F, S, S, 3]``, their crop-space masks ``[F, S, S]``, the frame-space masks
    ``[F, H, W]``, the transforms ``[F, 2, 3]`` and which frames were edited ``[F]``."""

    start: int
    frames: list
    crops: torch.Tensor
    crop_masks: torch.Tensor
    frame_masks: torch.Tensor
    transforms: np.ndarray
    editable: np.ndarray


class FrameSink(Protocol):
    """Where the edited frames go: ``with sink.writing(num_frames, audio) as write: write(chunk)``; leaving the
    block by an exception leaves nothing half-written."""

    def writing(self, num_frames: int, audio: Audio): ...


class TensorSource:
    """Frames held as an IMAGE batch ``[T, H, W, 3]`` (one frame: a still, held as long as the audio)."""

    def __init__(self, frames: torch.Tensor):
        if frames.ndim != 4 or frames.shape[-1] < 3:
            raise ValueError(f"frames must be [frames, height, width, 3], got {tuple(frames.shape)}")
        self._frames = frames
        self.frame_size = (frames.shape[1], frames.shape[2])

    @property
    def num_frames(self) -> int:
        return self._frames.shape[0]

    def frames(self, indices: Sequence[int] | None) -> Iterator[torch.Tensor]:
        for index in range(self.num_frames) if indices is None else indices:
            yield self._frames[int(index)]


class TensorSink:
    """The edited frames as an IMAGE batch (``frames``) and the frame-space masks (``masks``)."""

    def __init__(self, frame_size: tuple[int, int]):
        self.frame_size = frame_size
        self.frames: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None

    @contextmanager
    def writing(self, num_frames: int, audio: Audio):
        frames = torch.empty((num_frames, *self.frame_size, 3), dtype=torch.float32)
        masks = torch.empty((num_frames, *self.frame_size), dtype=torch.float32)

        def write(chunk: EditedChunk) -> None:
            end = chunk.start + len(chunk.frames)
            source = torch.stack([frame[..., :3] for frame in chunk.frames]).float()
            frames[chunk.start : end] = paste_back(source, chunk.crops, chunk.crop_masks.numpy(), chunk.transforms,
                                                   found=chunk.editable)
            masks[chunk.start : end] = chunk.frame_masks

        yield write
        self.frames, self.masks = frames, masks


@dataclass
class DubResult:
    """What a run fitted: ``audio`` (the speech cut or padded to the output) and the output's source frame
    indices ``frame_indices [T]``."""

    audio: Audio
    frame_indices: np.ndarray


def dub(
    source: FrameSource,
    speech: Audio,
    sink: FrameSink,
    loaded: LoadedModel,
    whisper,
    fps: float | Fraction,
    options: SamplerOptions | SamplingPlan | None = None,
    face_options: FaceOptions | None = None,
    fit_mode: str = "loop",
    reference_index: int = 0,
    track: FaceTrack | None = None,
    user_mask: torch.Tensor | None = None,
    motion=None,
    style: StyleReference | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    buffer: Callable[..., torch.Tensor] = torch.zeros,
) -> DubResult:
    """Lip-sync the frames of ``source`` to ``speech`` (mono ``Audio``) into ``sink``; the stages of the module.

    ``options``: the user's ``SamplerOptions`` (``auto`` filled from the model file's defaults) or a
    ``SamplingPlan`` used as it is. ``face_options``: tracking, mask and crop (``auto``: the file's).
    ``fit_mode``: how lengths are matched (``audio.FIT_MODES``). ``reference_index``: which output frame's face
    is the identity reference. ``track``: a ``FaceTrack`` of the source frames instead of mediapipe's.
    ``user_mask``: a MASK of one output frame or one per output frame that replaces the face mask (frames
    without a face but with a mask are framed around it). ``motion``: a ``MouthMotion`` (e.g. of a driving
    video) moved onto this face's mouth, for a model with a mouth-motion input. ``style``: a speaking-style
    reference of this model, weighed by ``options.style_strength``. ``buffer(shape, dtype=...)`` allocates the
    arrays that grow with the length.
    """
    report = progress or (lambda stage, done, total: None)
    defaults = loaded.defaults
    if isinstance(options, SamplingPlan):
        plan = options
    else:
        options = options or SamplerOptions()
        plan = options.resolve(defaults, fps=float(fps), styled=is_styled(style, options.style_strength, motion))
    face_options = (face_options or FaceOptions()).resolve(defaults)
    loaded.check_inputs(whisper, motion=motion, style=style)  # what this family cannot take fails before any work
    style_tokens = None if style is None else style.for_model(loaded.model)  # a wrong model fails before any work
    if motion is not None:
        require_motion_input(loaded.model)  # likewise
    pipeline = loaded.pipeline()
    size = face_options.crop_size
    device = torch.device(device) if device is not None else loaded.model.device
    if not isinstance(options, SamplingPlan):  # a plan given whole is used as it is
        plan = fit_to_device(plan, options, loaded, size, device, motion=motion is not None or style is not None)

    # 1. Track (the first pass over the source; it also counts a file's frames).
    if track is None:
        track = track_faces(
            (_uint8(frame) for frame in source.frames(None)),
            fps=float(fps),
            select=face_options.face,
            face_index=face_options.face_index,
            model_folders=face_options.model_folders,
            progress=lambda done: report(Stage.TRACKING, done, 0),
        )
    else:
        for done, _frame in enumerate(source.frames(None), 1):
            report(Stage.TRACKING, done, 0)
        if len(track.found) != source.num_frames or tuple(track.frame_size) != tuple(source.frame_size):
            raise ValueError(
                f"the face track has {len(track.found)} frames of {tuple(track.frame_size)} but the video has "
                f"{source.num_frames} frames of {tuple(source.frame_size)}; give the track of this video"
            )

    # 2. Lengths, audio features, the motion a mouth motion or a style gives.
    fitted = fit_audio_video(speech, source.num_frames, fps, fit_mode)
    indices, num_frames = fitted.frame_indices, fitted.num_frames
    track = track.select(indices)
    if user_mask is None and not track.any_found:
        track.require_face()
    latent_size = size // pipeline.vae_scale_factor
    condition = None
    if motion is not None:  # a motion of another length fails here, before the audio features
        motion = target_motion(motion, track, float(fps))
        condition = motion_condition(motion, loaded.model, num_frames, float(fps), latent_size)
    features = loaded.audio_features(whisper, fitted.audio, fps, num_frames, buffer,
                                     progress=lambda done, total: report(Stage.AUDIO_FEATURES, done, total))
    if condition is None:
        condition = style_condition(target_style(style, track, float(fps)), loaded.model, features, float(fps),
                                    defaults.window, latent_size, plan.style_strength)

    # Where each output frame is cropped; a user's mask (held whole, as the user gave it) may lead where no
    # face was found.
    frame_masks = None
    if user_mask is not None:
        user_mask = broadcast_mask(user_mask, num_frames, tuple(source.frame_size), "user_mask")
        frame_masks = face_mask(track, float(fps), face_options, user_mask=user_mask)
    transforms, editable = loaded.crop_transforms(track, size, None if frame_masks is None else frame_masks.numpy())

    def crops_and_masks(start: int, frames: list):
        """Crops IMAGE ``[F, S, S, 3]``, crop-space masks ``[F, S, S]`` and frame masks of output frames from
        ``start``."""
        end = start + len(frames)
        if frame_masks is None:
            masks = face_mask(track, float(fps), face_options, frames=range(start, end))
        else:
            masks = frame_masks[start:end]
        crop_masks = loaded.crop_mask(torch.from_numpy(warp_to_crop(masks.numpy(), transforms[start:end], size)))
        crop_masks[~torch.from_numpy(editable[start:end])] = 0.0
        return uint8_to_frames(warp_to_crop(frames, transforms[start:end], size)), crop_masks, masks

    # 3. Canvas latents (the second pass), the reference crop on the way.
    generator = torch.Generator().manual_seed(plan.seed)
    video = pipeline.prepare_latents(num_frames, (size, size), plan, generator, buffer=buffer)
    reference_at = min(reference_index, num_frames - 1)
    id_features = None
    frames = source.frames(indices)
    for start in range(0, num_frames, plan.decode_chunk):
        end = min(start + plan.decode_chunk, num_frames)
        crops, crop_masks, _ = crops_and_masks(start, [next(frames) for _ in range(start, end)])
        if start <= reference_at < end:
            id_features = loaded.encode_reference(crops[reference_at - start][None])
        pipeline.encode_canvas(video, start, images_to_model(crops), crop_masks[:, None], plan, generator, device)
        report(Stage.CANVAS, end, num_frames)

    # 4. Sampling.
    pipeline.denoise(video, features, id_features, plan, device=device, motion=condition, style=style_tokens,
                     window_callback=lambda done, total: report(Stage.DENOISING, done, total))

    # 5. Decode, composite, paste into the source frames (the third pass), write.
    with sink.writing(num_frames, fitted.audio) as write:
        frames = source.frames(indices)
        for start, generated in pipeline.decode(video, plan, device):
            chunk = [next(frames) for _ in range(generated.shape[0])]
            crops, crop_masks, masks = crops_and_masks(start, chunk)
            edited = model_to_images(composite(generated, images_to_model(crops), crop_masks[:, None]))
            end = start + len(chunk)
            write(EditedChunk(start, chunk, edited, crop_masks, masks, transforms[start:end], editable[start:end]))
            report(Stage.WRITING, end, num_frames)
    return DubResult(fitted.audio, indices)


def lipsync(
    frames: torch.Tensor,
    fps: float,
    audio: Audio,
    loaded: LoadedModel,
    whisper,
    options: SamplerOptions | SamplingPlan | None = None,
    face_options: FaceOptions | None = None,
    fit_mode: str = "loop",
    reference_index: int = 0,
    user_mask: torch.Tensor | None = None,
    track: FaceTrack | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    motion=None,
    style: StyleReference | None = None,
) -> tuple[torch.Tensor, Audio, torch.Tensor]:
    """``dub`` of frames in memory, IMAGE ``[T, H, W, 3]`` (or one image, held as long as the audio), at ``fps``;
    returns ``(frames, audio, mask)``: the edited frames, the speech fitted to them and the frame-space mask
    ``[T, H, W]``. The arguments are ``dub``'s; ``streaming.lipsync_file`` does the same from file to file."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    sink = TensorSink((frames.shape[1], frames.shape[2]))
    result = dub(TensorSource(frames), audio, sink, loaded, whisper, fps, options, face_options, fit_mode,
                 reference_index, track, user_mask, motion, style, device, progress)
    return sink.frames, result.audio, sink.masks


def _uint8(frame) -> np.ndarray:
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8:
        return frame
    return frames_to_uint8(frame)
