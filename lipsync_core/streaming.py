"""Lip sync from file to file in bounded memory: the video is a stream, not a tensor.

``lipsync_file`` runs the same steps as ``inference.lipsync`` (and gives the same frames), but never
holds the video:

1. decode -> track the face (landmarks kept, pixels dropped)
2. fit audio and video lengths; per-frame Whisper features written as the encoder goes
3. decode again -> crop + held mask -> VAE canvas latents, chunk by chunk
4. sample: latents only (windows blended at every step)
5. decode latents in chunks -> paste into the source frames, re-read -> encode, with the audio muxed

What grows with the video's length is small per-frame state: landmarks, crop transforms, latents and
audio features. Buffers over ``spill_bytes`` live in an unlinked temporary file, read and written a
window at a time, so they cost disk, not memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total); raise to cancel

DEFAULT_SPILL_BYTES = 256 << 20


class SpilledFrames:
    """A ``[T, ...]`` float32 array in a temporary file (deleted as soon as it is open), read and written
    by slices of frames with ``pread``/``pwrite``: the page cache may keep it, the process does not."""

    def __init__(self, shape: tuple[int, ...], directory: str | None = None):
        self.shape = torch.Size(shape)
        self.dtype = torch.float32
        self.ndim = len(shape)
        self._frame_floats = int(np.prod(shape[1:], dtype=np.int64))
        handle, path = tempfile.mkstemp(prefix="sayanything-", suffix=".frames", dir=directory)
        os.unlink(path)  # nothing is left behind, whatever happens to this process
        self._fd = handle
        os.ftruncate(handle, 4 * self._frame_floats * shape[0])

    def _range(self, index) -> tuple[int, int]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("SpilledFrames takes contiguous slices of frames")
            return start, max(start, stop)
        index = int(index) + (self.shape[0] if int(index) < 0 else 0)
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"frame {index} is outside {self.shape[0]} frames")
        return index, index + 1

    def __getitem__(self, index) -> torch.Tensor:
        start, stop = self._range(index)
        count = (stop - start) * self._frame_floats
        data = os.pread(self._fd, 4 * count, 4 * start * self._frame_floats)
        array = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(stop - start, *self.shape[1:])
        return array[0] if not isinstance(index, slice) else array

    def __setitem__(self, index, value) -> None:
        start, stop = self._range(index)
        value = torch.as_tensor(value, dtype=torch.float32).expand(stop - start, *self.shape[1:])
        os.pwrite(self._fd, value.contiguous().numpy().tobytes(), 4 * start * self._frame_floats)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def frame_buffer(
    shape,
    dtype: torch.dtype = torch.float32,
    spill_bytes: int | None = DEFAULT_SPILL_BYTES,
    directory: str | None = None,
):
    """Zeros ``[T, ...]`` in memory, or in a :class:`SpilledFrames` file when larger than ``spill_bytes``."""
    size = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    if spill_bytes is None or size <= spill_bytes:
        return torch.zeros(shape, dtype=dtype)
    if dtype != torch.float32:
        raise ValueError("spilled buffers hold float32")
    return SpilledFrames(tuple(shape), directory)


@dataclass
class StreamSettings:
    """How a streaming run writes and holds things (the ``run`` command's flags)."""

    crf: float = 16.0  # x264 quality: ~16 is visually lossless, what a master wants
    preset: str = "medium"
    spill_bytes: int | None = DEFAULT_SPILL_BYTES
    spill_dir: str | None = None
    chunk: int | None = None  # frames per crop / VAE chunk; default: the sampler's decode_chunk


def lipsync_file(
    video: str | os.PathLike,
    speech,
    output: str | os.PathLike,
    loaded,
    whisper,
    options=None,
    face_options=None,
    fit_mode: str = "loop",
    fps: float | Fraction | None = None,
    reference_index: int = 0,
    mux_audio: tuple[np.ndarray, int] | None = None,
    settings: StreamSettings | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    track=None,
    motion=None,
    style=None,
    style_strength: float = 1.0,
) -> str:
    """Lip-sync ``video`` (a file, or an image held as a still) to ``speech`` (mono ``Audio``) into ``output``.

    ``mux_audio``: ``(samples float32 [channels, n], sample_rate)`` put in the output as it is (cut or
    padded to the video); default: ``speech``. ``track``: a ``FaceTrack`` of the source frames instead of
    mediapipe's. ``motion``: a ``MouthMotion`` (e.g. of a driving video) moved onto this face's mouth, for a
    model with a mouth-motion input. ``style`` / ``style_strength``: a speaking-style reference
    (``lipsync_core.style.StyleReference``), as in ``inference.generate``. The output keeps the source's
    size, fps, pixel format and rotation. It appears under its name only when complete. Returns the output path.
    """
    from . import inference
    from .audio import fit_audio_video
    from .face import align_transforms, track_faces, warp_to_crop
    from .media import VideoReader, VideoWriter
    from .pipeline import SayAnythingPipeline, composite
    from .style import is_styled

    settings = settings or StreamSettings()
    report = progress or (lambda stage, done, total: None)
    defaults = loaded.defaults
    styled = is_styled(style, style_strength, motion)
    options = (options or inference.SamplerOptions()).resolve(defaults, styled=styled)
    face_options = (face_options or inference.FaceOptions()).resolve(defaults)
    style_tokens = None if style is None else style.for_model(loaded.model)  # a wrong model fails before any work
    if motion is not None:
        from .motion import require_motion_input

        require_motion_input(loaded.model)  # likewise
    reader = VideoReader(video)
    fps = fps or reader.info.fps
    if fps is None:
        raise ValueError(f"{video} is an image: give the frame rate (e.g. fps=25)")
    fps = Fraction(fps).limit_denominator(1001)
    chunk = settings.chunk or options.decode_chunk
    size = face_options.crop_size

    # 1. Track (the first decode): landmarks only. A given track (another tracker's, a drawn
    # character's known landmarks) replaces mediapipe; the pass still counts the frames.
    if track is None:
        track = track_faces(
            iter(reader),
            fps=float(fps),
            select=face_options.face,
            face_index=face_options.face_index,
            model_folders=face_options.model_folders,
            progress=lambda done: report("tracking", done, 0),
        )
    else:
        for done, _frame in enumerate(reader, 1):
            report("tracking", done, 0)
        frame_size = (reader.info.height, reader.info.width)
        if len(track.found) != reader.num_frames or tuple(track.frame_size) != frame_size:
            raise ValueError(
                f"the face track has {len(track.found)} frames of {tuple(track.frame_size)} but {video} has "
                f"{reader.num_frames} frames of {frame_size}; give the track of this video"
            )
    # 2. Lengths, audio features
    fitted = fit_audio_video(speech, reader.num_frames, fps, fit_mode)
    indices, num_frames = fitted.frame_indices, fitted.num_frames
    track = track.select(indices)
    if not track.any_found:
        track.require_face()
    condition = None
    latent_size = size // SayAnythingPipeline(loaded.model, loaded.vae).vae_scale_factor
    if motion is not None:  # a motion of another length fails here, before the audio features
        from .motion import motion_condition, target_motion

        motion = target_motion(motion, track, float(fps))
        condition = motion_condition(motion, loaded.model, num_frames, float(fps), latent_size)
    features = frame_buffer(
        (num_frames, whisper.num_hidden_states, defaults.feature_window, whisper.hidden_size),
        spill_bytes=settings.spill_bytes,
        directory=settings.spill_dir,
    )
    whisper.frame_features(
        fitted.audio,
        fps,
        num_frames=num_frames,
        window=defaults.feature_window,
        out=features,
        progress=lambda done, total: report("audio features", done, total),
    )
    if condition is None:
        from .style import style_condition, target_style

        condition = style_condition(target_style(style, track, float(fps)), loaded.model, features, float(fps),
                                    defaults.window, latent_size, style_strength)
    transforms = align_transforms(track, size)

    def crops_and_masks(start: int, end: int, frames: list[np.ndarray]):
        """Crops (model input, -1..1) and crop-space masks of output frames [start, end)."""
        frame_masks = inference.face_mask(track, float(fps), face_options, frames=range(start, end))
        masks = torch.from_numpy(warp_to_crop(frame_masks.numpy(), transforms[start:end], size))
        masks[~torch.from_numpy(track.found[start:end])] = 0.0
        crops = torch.from_numpy(warp_to_crop(np.stack(frames), transforms[start:end], size)).float() / 255.0
        return inference.images_to_model(crops), masks[:, None]

    # 3. Canvas latents (the second decode), the reference crop on the way
    model_device = torch.device(device) if device is not None else loaded.model.device
    pipeline = SayAnythingPipeline(loaded.model, loaded.vae)
    generator = torch.Generator().manual_seed(options.seed)
    buffer = lambda shape, dtype: frame_buffer(shape, dtype, settings.spill_bytes, settings.spill_dir)  # noqa: E731
    speed = options.speed_settings()
    latents = pipeline.prepare_latents(
        num_frames, (size, size), options.steps, generator, buffer=buffer, schedule=speed.schedule
    )
    reference_at = min(reference_index, num_frames - 1)
    id_features = None
    source = reader.frames(indices)
    for start in range(0, num_frames, chunk):
        end = min(start + chunk, num_frames)
        crops, masks = crops_and_masks(start, end, [next(source) for _ in range(start, end)])
        if start <= reference_at < end:
            id_features = inference.encode_reference(
                loaded, inference.model_to_images(crops[reference_at - start][None])
            )
        pipeline.encode_canvas(latents, start, crops, masks, options.noise_aug_strength, generator, model_device)
        report("canvas", end, num_frames)

    # 4. Sampling
    pipeline.denoise(
        latents,
        features,
        id_features,
        options.steps,
        options.reference_guidance,
        options.audio_guidance,
        options.window,
        options.overlap,
        float(fps),
        defaults.motion_bucket_id,
        options.noise_aug_strength,
        window_callback=lambda done, total: report("denoising", done, total),
        device=model_device,
        motion=condition,
        speed=speed,
        style=style_tokens,
        style_scale=style_strength,
        motion_guidance_scale=options.motion_guidance,
    )

    # 5. Decode, paste into the re-read source frames (the third decode), encode
    audio, rate = (
        mux_audio if mux_audio is not None else (fitted.audio.waveform.numpy()[None], fitted.audio.sample_rate)
    )
    audio = _fit_samples(audio, round(Fraction(num_frames) / fps * rate))
    with VideoWriter(output, reader.info, fps, audio, rate, crf=settings.crf, preset=settings.preset) as writer:
        source = reader.frames(indices)
        for start, generated in pipeline.decode(latents, chunk, model_device, speed):
            end = start + generated.shape[0]
            frames = [next(source) for _ in range(start, end)]
            crops, masks = crops_and_masks(start, end, frames)
            edited = inference.model_to_images(composite(generated, crops, masks))
            pasted = inference.paste_faces_into(
                np.stack(frames), edited, masks[:, 0], transforms[start:end], track.found[start:end]
            )
            for frame in pasted:
                writer.write(frame)
            report("writing", end, num_frames)
        path = writer.close()
    reader.close()
    return path


def _fit_samples(samples: np.ndarray, length: int) -> np.ndarray:
    """Audio ``[C, N]`` cut or padded with silence to ``length`` samples."""
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    if samples.shape[1] >= length:
        return samples[:, :length]
    return np.pad(samples, ((0, 0), (0, length - samples.shape[1])))
