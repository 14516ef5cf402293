"""Speaking-style reference: a clip of the speaker talking -> the STYLE the sampler takes.

The model's style encoder (``models.style_encoder``) was trained on ``ModelDefaults.style_reference_frames``
(R) consecutive frames of another clip of the same speaker at the training fps: aligned face crops at the
model's crop size, each with the clip's Whisper features of that frame
(``training.dataset.LipSyncWindows.style_reference``). A reference is brought to that form:

1. resampled to the model's fps (``ModelDefaults.fps``; frame ``i`` is the source frame showing the
   instant ``(i + 0.5) / fps``), so R frames span the time they spanned in training at any frame rate;
2. the R-frame stretch with the most speech (frames louder than ``SPEECH_FLOOR_DB`` and within
   ``SPEECH_RANGE_DB`` of the clip's loud speech, with a face): a style shows only while the speaker talks;
3. aligned crops (``face.prepare_face_crops``, the crop inference and training use) and per-frame Whisper
   features (``WhisperAudioEncoder.frame_features`` over the stretch and ``CONTEXT_SECONDS`` around it);
4. ``SayAnythingModel.encode_style``, and from the reference's face track the speaker's resting mouth and
   how far their lips move against what the encoder predicts for the same speech (``calibrate_lips``).

For a model with a mouth-motion input the style also gives the motion condition (``style_condition``):
the lip motion the style encoder predicts for the new speech, drawn around that resting mouth, or around
the edited face's own where that face is tracked (``target_style``: ``dubbing.lipsync``,
``streaming.lipsync_file``). An explicit mouth motion given with a style takes its place.

A reference shorter than R frames at the model's fps is an error that says how many seconds are needed
(ours: the encoder was only ever trained on R pairs, so fewer is a condition it never saw).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .audio import Audio, load_audio
from .audio.fit import frame_start_sample
from .configs import ModelDefaults
from .face import prepare_face_crops, track_faces
from .media import VideoReader
from .motion import MouthMotion, from_rest_widths, in_rest_widths, motion_from_track, render_motion
from .tensors import frames_to_uint8, images_to_model, uint8_to_frames

SPEECH_FLOOR_DB = -45.0  # frame RMS in dBFS below which a frame is silent, however quiet the clip (ours)
SPEECH_RANGE_DB = 30.0  # frames this far below the clip's loud speech (95th percentile RMS) are pauses (ours)
CONTEXT_SECONDS = 10.0  # Whisper hears this much audio either side of the stretch, as inside a training clip

StepCallback = Callable[[int, int], None]


@dataclass
class StyleReference:
    """The STYLE value: a reference clip encoded by one model's style encoder.

    ``tokens`` float32 ``[1, R, hidden]`` (``encode_style``, CPU); ``frames`` int64 ``[R]``: the
    reference's frames it shows (at the model's fps, so a frame may repeat); ``fps``: the reference's
    frame rate; ``start`` / ``duration``: where the stretch is in the reference, seconds;
    ``speech_share``: its share of frames with speech; ``rest``: the speaker's resting mouth in the
    reference (``motion.estimate_rest``, crop units ``[40, 2]``), where ``style_motion`` puts the
    predicted motion; ``lip_gain`` ``[40, 2]``: how much farther than predicted this speaker's lips move
    (``calibrate_lips``).
    """

    tokens: torch.Tensor
    frames: np.ndarray
    fps: float
    start: float
    duration: float
    speech_share: float
    rest: np.ndarray | None = None
    lip_gain: np.ndarray | None = None

    def for_model(self, model) -> torch.Tensor:
        """The tokens for ``model`` (a ``SayAnythingModel``); a clear error for one that cannot take them."""
        require_style_input(model)
        hidden = model.config.style.hidden_dim
        if self.tokens.ndim != 3 or self.tokens.shape[-1] != hidden:
            raise ValueError(
                f"This speaking style was encoded by another model (tokens of width {self.tokens.shape[-1]}, this "
                f"model's style encoder has {hidden}); encode the reference with the model that samples."
            )
        return self.tokens

    def on_mouth(self, rest: np.ndarray) -> StyleReference:
        """This style drawn around another resting mouth ``[40, 2]`` (the face being edited). Its lips are
        predicted in rest widths, so they take that mouth's size as well as its place (``motion.retarget``)."""
        return replace(self, rest=np.asarray(rest, np.float32))


def target_style(style: StyleReference | None, track, fps: float) -> StyleReference | None:
    """``style`` on the mouth of the tracked face being edited, as ``motion.target_motion`` moves an explicit
    motion there; unchanged without a style or a face."""
    if style is None or not track.any_found:
        return style
    return style.on_mouth(motion_from_track(track, fps).rest)


LIP_GAIN_PRIOR = 0.1  # calibration's pull toward gain 1, in units of a lip coordinate's mean predicted energy
LIP_GAIN_RANGE = (0.25, 4.0)


def predict_lips(model, tokens: torch.Tensor, audio_features: torch.Tensor, window: int) -> np.ndarray:
    """``predict_mouth`` over per-frame features ``[T, L, W, D]`` in chunks of ``window`` frames (the frames the
    encoder saw together in training) -> ``[T, 40, 2]`` in rest widths."""
    device, dtype = model.device, model.dtype
    tokens = tokens.to(device, dtype)
    with torch.no_grad():
        chunks = [model.style_encoder.predict_mouth(audio_features[start : start + window][None].to(device, dtype),
                                                    tokens)[0].float().cpu()
                  for start in range(0, len(audio_features), window)]
    return torch.cat(chunks).numpy()


def calibrate_lips(model, tokens: torch.Tensor, audio_features: torch.Tensor, lips: np.ndarray,
                   window: int) -> np.ndarray:
    """Per lip coordinate ``[40, 2]``, the gain that best maps the motion the encoder predicts for the reference's
    own speech onto the lips the reference shows (least squares, pulled toward 1 by ``LIP_GAIN_PRIOR``, kept in
    ``LIP_GAIN_RANGE``). Ours: the toy encoder reads a speaker's mouth shapes from the reference but not how
    far they open, which the reference's own lips say directly."""
    predicted = predict_lips(model, tokens, audio_features, window)
    prior = LIP_GAIN_PRIOR * float((predicted**2).sum(axis=0).mean())
    gain = ((predicted * lips).sum(axis=0) + prior) / ((predicted**2).sum(axis=0) + prior)
    return np.clip(gain, *LIP_GAIN_RANGE).astype(np.float32)


def style_motion(style: StyleReference, model, audio_features: torch.Tensor, fps: float, window: int):
    """The mouth motion (``MouthMotion``) the referenced speaker would make for this speech: the style
    encoder's ``predict_mouth`` on per-frame Whisper features ``[T, L, W, D]``, in chunks of ``window`` frames
    (the frames it saw together in training), scaled by the reference's ``lip_gain``, around its resting
    mouth. ``style`` must be this model's (``StyleReference.for_model``)."""
    if style.rest is None:
        raise ValueError("This speaking style carries no resting mouth (it was encoded without a face track); "
                         "encode the reference again with SayAnything Style Reference.")
    lips = predict_lips(model, style.tokens, audio_features, window)
    if style.lip_gain is not None:
        lips = lips * style.lip_gain
    return MouthMotion(from_rest_widths(lips, style.rest), fps, style.rest)


def style_condition(style: StyleReference | None, model, audio_features: torch.Tensor, fps: float, window: int,
                    latent_size: int | tuple[int, int], strength: float = 1.0) -> torch.Tensor | None:
    """The motion condition ``[T, C, h, w]`` a speaking style gives a model with a mouth-motion input: its
    ``style_motion`` rendered (``motion.render_motion``) and weighed by ``strength``, which the UNet's input
    layer takes linearly (0: no motion, 1: as trained). None when there is nothing to give."""
    if style is None or not model.config.unet.motion_channels or strength == 0:
        return None
    motion = style_motion(style, model, audio_features, fps, window)
    return torch.from_numpy(render_motion(motion, latent_size)) * float(strength)


def is_styled(style: StyleReference | None, strength: float, motion) -> bool:
    """Whether a run is led by its speaking style: one is given, weighed above 0, and no explicit mouth motion
    takes its place (``SamplerOptions.resolve(styled=)``: the file's ``style_audio_guidance`` applies)."""
    return style is not None and strength != 0 and motion is None


def require_style_input(model, defaults=None) -> int:
    """R, the reference frames ``model`` was trained with; a clear error for a model without a style input."""
    frames = (defaults or getattr(model, "defaults", None) or ModelDefaults()).style_reference_frames
    if getattr(model.config, "style", None) is None or frames < 1:  # any family's model
        raise ValueError(
            "This model has no speaking-style input (it was trained without a style reference): pick a model "
            "trained with one (e.g. one made by `python -m lipsync_core toy`), or leave the style reference out."
        )
    return int(frames)


def speech_frames(audio, fps: float, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame: is there speech (bool ``[T]``), and its RMS in dBFS (float ``[T]``; -inf past the audio)."""
    waveform = audio.waveform.double().numpy()
    energy = np.concatenate([[0.0], np.cumsum(waveform**2)])
    bounds = np.array([frame_start_sample(i, audio.sample_rate, fps) for i in range(num_frames + 1)])
    bounds = np.clip(bounds, 0, len(waveform))
    lengths = np.diff(bounds)
    power = np.where(lengths > 0, (energy[bounds[1:]] - energy[bounds[:-1]]) / np.maximum(lengths, 1), 0.0)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(power)
    loud = level[np.isfinite(level)]
    if loud.size == 0:
        return np.zeros(num_frames, bool), level
    threshold = max(SPEECH_FLOOR_DB, float(np.percentile(loud, 95)) - SPEECH_RANGE_DB)
    return level > threshold, level


def encode_style_reference(
    loaded,
    whisper,
    frames,
    audio,
    fps: float,
    track=None,
    face: str = "largest",
    face_index: int = 0,
    model_folders: Sequence[str | os.PathLike] = (),
    progress: StepCallback | None = None,
) -> StyleReference:
    """The speaking style of a reference clip of the speaker: frames uint8 ``[T, H, W, 3]`` or IMAGE float
    0..1, its own ``audio`` (``Audio``; None is an error), its ``fps``. ``track``: a ``FaceTrack`` of these
    frames instead of mediapipe's (faces mediapipe does not find). ``progress(done, total)`` per tracked frame.
    """
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"style reference frames must be [frames, height, width, 3], got {tuple(frames.shape)}")
    def uint8(index: int) -> np.ndarray:  # one frame at a time: no uint8 copy of a whole IMAGE batch
        frame = frames[index]
        if isinstance(frame, np.ndarray) and frame.dtype == np.uint8:
            return frame[..., :3]
        return frames_to_uint8(torch.as_tensor(frame))

    _check_inputs(loaded, audio, fps, len(frames))
    total = len(frames)
    if track is None:
        track = track_faces((uint8(i) for i in range(total)), fps=fps, select=face, face_index=face_index,
                            model_folders=model_folders,
                            progress=None if progress is None else (lambda done: progress(done, total)))
    elif len(track.found) != total or tuple(track.frame_size) != tuple(frames.shape[1:3]):
        raise ValueError(
            f"the face track has {len(track.found)} frames of {tuple(track.frame_size)} but the style reference has "
            f"{total} frames of {tuple(frames.shape[1:3])}; give the track of the reference clip"
        )
    return _encode(loaded, whisper, lambda indices: np.stack([uint8(i) for i in indices]), total, track, audio, fps)


def read_style_reference(
    path: str | os.PathLike,
    loaded,
    whisper,
    face: str = "largest",
    face_index: int = 0,
    model_folders: Sequence[str | os.PathLike] = (),
    progress: Callable[[int], None] | None = None,
) -> StyleReference:
    """``encode_style_reference`` of a video file with its own soundtrack (``run --style-video``), streamed:
    the whole clip is tracked, but only the stretch used is decoded again into memory. ``progress(done)``
    per tracked frame."""
    reader = VideoReader(path)
    if reader.info.fps is None:
        raise ValueError(f"{path} is an image: a style reference is a video of the speaker talking, with its sound.")
    fps = float(reader.info.fps)
    try:
        audio = load_audio(path)
    except ValueError as error:
        message = f"The style reference needs the speaker talking, with the clip's own sound: {error}"
        raise ValueError(message) from error
    _check_inputs(loaded, audio, fps, None)
    track = track_faces(iter(reader), fps=fps, select=face, face_index=face_index, model_folders=model_folders,
                        progress=progress)
    try:
        return _encode(loaded, whisper, lambda indices: np.stack(list(reader.frames(indices))), reader.num_frames,
                       track, audio, fps)
    finally:
        reader.close()


def _check_inputs(loaded, audio, fps: float, num_frames: int | None) -> None:
    require_style_input(loaded.model, loaded.defaults)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames == 0:
        raise ValueError("the style reference has no frames; give a clip of the speaker talking")
    if audio is None or audio.num_samples == 0:
        raise ValueError(
            "The style reference has no sound: it needs the speaker talking, with the clip's own soundtrack "
            "(e.g. Get Video Components' audio of the reference video)."
        )


def _encode(loaded, whisper, take: Callable[[np.ndarray], np.ndarray], num_frames: int, track, audio,
            fps: float) -> StyleReference:
    """Steps 1-4 of the module docstring; ``take(indices)`` gives uint8 frames ``[k, H, W, 3]`` of the clip."""
    defaults = loaded.defaults
    count = require_style_input(loaded.model, defaults)
    rate = float(defaults.fps)
    # 1. The reference at the model's fps: which source frame shows each instant.
    length = max(1, round(num_frames * rate / fps))
    source = np.minimum(((np.arange(length) + 0.5) * fps / rate).astype(np.int64), num_frames - 1)
    if length < count:
        raise ValueError(
            f"The style reference is {num_frames / fps:.2f} s long ({num_frames} frames at {fps:g} fps); this model "
            f"needs at least {count / rate:.2f} s of the speaker talking ({count} frames at its {rate:g} fps). "
            "Give a longer clip of the speaker."
        )
    # 2. The stretch with the most speech among frames that show the face.
    speech, _level = speech_frames(audio, rate, length)
    found = track.found[source]
    if not speech.any():
        raise ValueError(
            f"The style reference's sound is silent (no frame louder than {SPEECH_FLOOR_DB:g} dBFS): the reference "
            "needs the speaker talking, with the clip's own sound."
        )
    if not found.any():
        raise ValueError(
            f"No face was found in the style reference ({num_frames} frames). Give a clip where the speaker's face "
            "is visible (at least ~40 px across), or its face track (SayAnything Load Face Track)."
        )
    usable = (speech & found).astype(np.float64)
    if not usable.any():
        raise ValueError("In the style reference the speaker's face is never visible while they talk; give a clip "
                         "where the speaker is seen talking.")
    start = int(np.argmax(np.convolve(usable, np.ones(count), "valid")))
    stretch = slice(start, start + count)
    # 3. Crops as inference makes them; Whisper features with the audio around the stretch as context.
    chosen = source[stretch]
    crops = prepare_face_crops(take(chosen), fps=rate, size=defaults.crop_size, track=track.select(chosen)).crops
    context = int(round(CONTEXT_SECONDS * rate))
    first, last = max(0, start - context), min(length, start + count + context)
    features = _features(whisper, audio, rate, first, last, defaults.feature_window)
    features = features[start - first : start - first + count]
    # 4. Encode, with the stretch's lip points against the speaker's resting mouth (frames without a face
    # take their neighbours' lips).
    rest = motion_from_track(track, fps).rest
    lips = in_rest_widths(motion_from_track(track.select(chosen), rate).points, rest)
    model = loaded.model
    with torch.no_grad():
        tokens = model.encode_style(images_to_model(uint8_to_frames(crops)), features,
                                    torch.from_numpy(lips) if model.config.style.lip_motion else None)
    tokens = tokens.detach().float().cpu()
    return StyleReference(tokens, chosen, float(fps), start / rate, count / rate, float(speech[stretch].mean()), rest,
                          calibrate_lips(model, tokens, features, lips, defaults.window))


def _features(whisper, audio, fps: float, first: int, last: int, window: int) -> torch.Tensor:
    """Per-frame Whisper features of frames ``[first, last)`` at ``fps`` from the audio from frame ``first`` on."""
    begin = frame_start_sample(first, audio.sample_rate, fps)
    speech = Audio(audio.waveform[begin:], audio.sample_rate)
    return whisper.frame_features(speech, fps, num_frames=last - first, window=window).float().cpu()
