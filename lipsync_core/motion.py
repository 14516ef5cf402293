"""MOUTH_MOTION: per-frame lip landmarks in the aligned face crop, with their fps (ours).

The 40 lip points of the 478-point mesh (``face.track.LIPS_OUTER + LIPS_INNER``) are taken in the
aligned crop (``face.align_transforms``: eyes and nose tip fitted to a fixed template, so neither head
motion nor the mouth itself moves the crop) and divided by the crop size: ``(pixel + 0.5) / S``, so a
64 px and a 512 px crop give the same numbers. ``rest`` is the same mouth closed and relaxed; gain,
retargeting and blending act on the displacement from it.

Measures: ``opening`` = lower minus upper inner-lip centre (14 - 13) along the crop's vertical,
``width`` = right minus left outer corner (291 - 61) along its horizontal, both in crop units; the
opening is linear in the points, so a gain of 1.5 scales its variation by exactly 1.5.
Time: frame ``i`` stands for the instant ``(i + 0.5) / fps`` (the Whisper features' convention);
resampling to another fps interpolates linearly between those instants and holds the ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio.fit import frame_count
from .face import track_faces
from .face.align import align_transforms, gaussian_smooth, transform_points
from .face.track import LIPS_INNER, LIPS_OUTER, MOUTH_CORNERS, FaceTrack
from .media import VideoReader

MOUTH_POINTS = LIPS_OUTER + LIPS_INNER
NUM_MOUTH_POINTS = len(MOUTH_POINTS)
_UPPER, _LOWER = MOUTH_POINTS.index(13), MOUTH_POINTS.index(14)
_LEFT, _RIGHT = MOUTH_POINTS.index(MOUTH_CORNERS[0]), MOUTH_POINTS.index(MOUTH_CORNERS[1])
# The crop size the normalisation is computed at; any size gives the same crop units.
_ALIGN_SIZE = 512
REST_QUANTILE = 0.1  # the rest shape: mean of the frames with the smallest 10 % of openings (ours)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (14 - 13, vertical) of mouth points ``[..., 40, 2]``."""
    return points[..., _LOWER, 1] - points[..., _UPPER, 1]


def mouth_width(points: np.ndarray) -> np.ndarray:
    """Corner-to-corner width (291 - 61, horizontal) of mouth points ``[..., 40, 2]``."""
    return points[..., _RIGHT, 0] - points[..., _LEFT, 0]


def estimate_rest(points: np.ndarray) -> np.ndarray:
    """The resting mouth ``[40, 2]``: the mean shape of the least open frames (``REST_QUANTILE``)."""
    points = np.asarray(points, np.float32)
    keep = max(1, int(round(REST_QUANTILE * len(points))))
    closest = np.argsort(mouth_opening(points), kind="stable")[:keep]
    return points[closest].mean(axis=0)


def in_rest_widths(points: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Lip points' displacement from ``rest`` in units of its width: one scale for mouths of every size
    (the target of the motion models, ``from_rest_widths`` the way back)."""
    return (np.asarray(points, np.float32) - rest) / float(mouth_width(rest))


def from_rest_widths(displacement: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Lip points ``rest + displacement`` for a displacement in rest widths (``in_rest_widths``)."""
    return rest + np.asarray(displacement, np.float32) * float(mouth_width(rest))


@dataclass
class MouthMotion:
    """Mouth landmarks through time. ``points`` float32 ``[T, 40, 2]`` in crop units (order
    ``MOUTH_POINTS``), ``fps`` frames per second, ``rest`` float32 ``[40, 2]`` (default: estimated
    from the points with :func:`estimate_rest`)."""

    points: np.ndarray
    fps: float
    rest: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        if self.points.ndim != 3 or self.points.shape[1:] != (NUM_MOUTH_POINTS, 2) or len(self.points) == 0:
            raise ValueError(f"MouthMotion.points must be [T >= 1, {NUM_MOUTH_POINTS}, 2], got {self.points.shape}.")
        if not np.isfinite(self.points).all():
            raise ValueError("MouthMotion.points must be finite (fill frames without a face first).")
        if not self.fps > 0:
            raise ValueError(f"MouthMotion.fps must be positive, got {self.fps}.")
        self.fps = float(self.fps)
        self.rest = estimate_rest(self.points) if self.rest is None else np.asarray(self.rest, np.float32)
        if self.rest.shape != (NUM_MOUTH_POINTS, 2):
            raise ValueError(f"MouthMotion.rest must be [{NUM_MOUTH_POINTS}, 2], got {self.rest.shape}.")

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def opening(self) -> np.ndarray:
        return mouth_opening(self.points)

    def width(self) -> np.ndarray:
        return mouth_width(self.points)

    def displacement(self) -> np.ndarray:
        """``points - rest`` ``[T, 40, 2]``."""
        return self.points - self.rest

    def at_positions(self, positions: np.ndarray) -> MouthMotion:
        """The motion sampled at fractional frame positions (linear; the ends are held), same fps."""
        positions = np.asarray(positions, np.float64)
        flat = self.points.reshape(self.num_frames, -1)
        frames = np.arange(self.num_frames)
        sampled = np.stack([np.interp(positions, frames, flat[:, k]) for k in range(flat.shape[1])], axis=1)
        return MouthMotion(sampled.reshape(len(positions), NUM_MOUTH_POINTS, 2), self.fps, self.rest)

    def resample(self, fps: float, num_frames: int | None = None) -> MouthMotion:
        """The same motion at another frame rate (frame ``i`` at ``(i + 0.5) / fps``); ``num_frames``
        defaults to the duration at the new rate, rounded."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}.")
        if num_frames is None:
            num_frames = max(1, int(round(self.duration * fps)))
        positions = (np.arange(num_frames) + 0.5) / fps * self.fps - 0.5
        resampled = self.at_positions(positions)
        return MouthMotion(resampled.points, fps, self.rest)

    def fit(self, num_frames: int, fps: float, tolerance: int = 1) -> MouthMotion:
        """This motion for a video of ``num_frames`` at ``fps``: resampled to that fps (stated, never an
        error), then a difference of up to ``tolerance`` frames (rounding) is absorbed by holding the
        last frame or cutting; a larger one is a clear error naming both lengths."""
        count = max(1, int(round(self.duration * fps)))
        if abs(count - num_frames) > tolerance:
            raise ValueError(
                f"The mouth motion lasts {self.duration:.2f} s ({self.num_frames} frames at {self.fps:g} fps = "
                f"{count} frames at {fps:g} fps) but the video has {num_frames} frames ({num_frames / fps:.2f} s). "
                "Give a motion of the video's length (fit the driving video or audio to it first), or shift/cut it."
            )
        return self.resample(fps, num_frames)

    def crop_points(self, size: int) -> np.ndarray:
        """The points in the pixels of an aligned crop of side ``size`` ``[T, 40, 2]`` (e.g. to render)."""
        return self.points * size - 0.5


def crop_units(track: FaceTrack, **align) -> np.ndarray:
    """Landmarks of a track in the aligned crop, in crop units ``[T, 478, 2]`` (NaN where no face)."""
    transforms = align_transforms(track, size=_ALIGN_SIZE, **align)
    return (transform_points(track.landmarks, transforms) + 0.5) / _ALIGN_SIZE


def _fill_missing(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Frames without a face take the motion interpolated from their neighbours (ends held)."""
    if found.all():
        return points
    present = np.flatnonzero(found)
    flat = points.reshape(len(points), -1).copy()
    for k in range(flat.shape[1]):
        flat[:, k] = np.interp(np.arange(len(points)), present, flat[present, k])
    return flat.reshape(points.shape)


def motion_from_track(track: FaceTrack, fps: float) -> MouthMotion:
    """The mouth motion of a face track (its own rest shape). Raises the track's clear error when no
    frame has a face; frames without one are interpolated."""
    track.require_face()
    points = crop_units(track)[:, list(MOUTH_POINTS)]
    return MouthMotion(_fill_missing(points, track.found), fps)


def retarget(motion: MouthMotion, rest: np.ndarray) -> MouthMotion:
    """The motion moved onto another mouth: its displacement from its own rest shape, scaled by the
    ratio of the rest widths, added to ``rest`` (the target's closed mouth)."""
    rest = np.asarray(rest, np.float32)
    scale = float(mouth_width(rest) / mouth_width(motion.rest))
    return MouthMotion(rest + motion.displacement() * scale, motion.fps, rest)


def mouth_motion_from_video(
    driving: FaceTrack,
    fps: float,
    target: FaceTrack | None = None,
) -> MouthMotion:
    """The driving face's mouth motion, retargeted to the target face's mouth (its size and rest
    shape, estimated from the target track) when one is given."""
    motion = motion_from_track(driving, fps)
    if target is not None:
        motion = retarget(motion, motion_from_track(target, fps).rest)
    return motion


def edit_motion(
    motion: MouthMotion,
    gain: float = 1.0,
    smoothing: float = 0.0,
    width_bias: float = 0.0,
    shift: float = 0.0,
    other: MouthMotion | None = None,
    blend: float = 0.0,
) -> MouthMotion:
    """Edit a motion, in this order:

    1. ``blend`` (0..1) with ``other``: ``other`` is resampled to this fps and retargeted to this
       rest shape, then the displacements are mixed; different lengths are an error.
    2. ``smoothing``: Gaussian over time, sigma in frames (calmer articulation).
    3. ``gain``: the displacement from rest times ``gain`` (1.5 = 50 % more articulation).
    4. ``width_bias``: the mouth widened by this fraction of its rest width about the rest centre
       (+ = smile, - = pucker).
    5. ``shift``: frames later (+) or earlier (-), fractional allowed; the ends are held.
    """
    points = motion.points
    if other is not None and blend != 0.0:
        moved = retarget(other.resample(motion.fps), motion.rest)
        if moved.num_frames != motion.num_frames:
            raise ValueError(
                f"Cannot blend mouth motions of different lengths: {motion.num_frames} frames and {moved.num_frames} "
                f"frames at {motion.fps:g} fps (the second one was {other.num_frames} frames at {other.fps:g} fps)."
            )
        points = (1.0 - blend) * points + blend * moved.points
    if smoothing > 0:
        points = gaussian_smooth(points.reshape(len(points), -1), smoothing).reshape(points.shape)
    rest = motion.rest
    points = rest + gain * (points - rest)
    if width_bias != 0.0:
        centre_x = 0.5 * (rest[_LEFT, 0] + rest[_RIGHT, 0])
        points = points.copy()
        points[..., 0] = centre_x + (points[..., 0] - centre_x) * (1.0 + width_bias)
    edited = MouthMotion(points, motion.fps, rest)
    if shift != 0.0:
        edited = edited.at_positions(np.arange(edited.num_frames) - shift)
    return edited


_PLOT_COLOURS = ((66, 135, 245), (245, 120, 66), (80, 190, 90), (200, 80, 200))


def plot_motion(
    motions: Sequence[MouthMotion],
    labels: Sequence[str] | None = None,
    width: int = 768,
    height: int = 320,
) -> np.ndarray:
    """A preview ``uint8 [height, width, 3]`` RGB: opening (top) and width (bottom) over time, relative
    to each motion's rest shape, one colour per motion, with a tick every second."""
    import cv2

    if not motions:
        raise ValueError("plot_motion needs at least one motion.")
    labels = list(labels) if labels is not None else [f"motion {k + 1}" for k in range(len(motions))]
    image = np.full((height, width, 3), 250, np.uint8)
    margin, panel = 40, (height - 30) // 2
    duration = max(m.duration for m in motions)
    curves = [("opening", lambda m: m.opening() - mouth_opening(m.rest)),
              ("width", lambda m: m.width() - mouth_width(m.rest))]
    for row, (name, measure) in enumerate(curves):
        top, bottom = 10 + row * panel, 10 + (row + 1) * panel - 10
        values = [measure(m) for m in motions]
        low = min(float(v.min()) for v in values)
        high = max(float(v.max()) for v in values)
        low, high = min(low, 0.0), max(high, 0.0)
        span = max(high - low, 1e-6)

        def y_of(v, top=top, bottom=bottom, low=low, span=span):
            return bottom - (v - low) / span * (bottom - top)

        cv2.rectangle(image, (margin, top), (width - 10, bottom), (210, 210, 210), 1)
        zero = int(round(y_of(0.0)))
        cv2.line(image, (margin, zero), (width - 10, zero), (190, 190, 190), 1)
        cv2.putText(image, name, (4, top + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
        for second in range(int(duration) + 1):
            x = int(round(margin + second / max(duration, 1e-6) * (width - 10 - margin)))
            cv2.line(image, (x, bottom), (x, bottom + 4), (120, 120, 120), 1)
            if row == 1:
                cv2.putText(image, f"{second}s", (x - 6, bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                            (90, 90, 90), 1, cv2.LINE_AA)
        for k, (m, v) in enumerate(zip(motions, values)):
            times = (np.arange(m.num_frames) + 0.5) / m.fps
            xs = margin + times / max(duration, 1e-6) * (width - 10 - margin)
            line = np.stack([xs, y_of(v)], axis=1).round().astype(np.int32)
            cv2.polylines(image, [line], False, _PLOT_COLOURS[k % len(_PLOT_COLOURS)], 1, cv2.LINE_AA)
    for k, label in enumerate(labels):
        colour = _PLOT_COLOURS[k % len(_PLOT_COLOURS)]
        cv2.putText(image, label, (margin + 8 + 130 * k, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return image


def mouth_motion_from_audio(
    model,
    whisper,
    audio,
    fps: float,
    num_frames: int | None = None,
    target: FaceTrack | None = None,
    progress=None,
) -> MouthMotion:
    """Mouth motion predicted from speech by a ``models.mouth_motion.AudioToMouthMotion``.

    The Whisper features are computed at the model's own fps (its temporal layers count frames), and
    the motion is resampled to ``fps`` / ``num_frames`` (default: the audio's length). ``target``: the
    face that will speak; its rest mouth replaces the model's average one.
    """
    model_fps = model.config.fps
    if num_frames is None:
        num_frames = frame_count(audio.num_samples, audio.sample_rate, fps)
    model_frames = max(1, int(np.ceil(num_frames / fps * model_fps)))
    features = whisper.frame_features(audio, model_fps, num_frames=model_frames, window=model.config.window,
                                      progress=progress)
    rest = None if target is None else motion_from_track(target, fps).rest
    return model.predict(features, model_fps, rest).resample(fps, num_frames)


MOTION_CHANNELS = 2  # rendered condition: mouth interior (inner lips), whole mouth (outer lips)
_RENDER_SUPERSAMPLE = 8


def render_motion(motion: MouthMotion, latent_size: int | tuple[int, int]) -> np.ndarray:
    """The per-frame condition a motion-conditioned UNet sees, ``float32 [T, 2, h, w]`` in 0..1 at latent
    resolution of the aligned crop: channel 0 the area inside the inner lips (the opening), channel 1
    inside the outer lips; anti-aliased (drawn 8x larger, then averaged) so sub-cell motion shows (ours)."""
    return _render_points(motion.points, latent_size)


def render_landmarks(landmarks: np.ndarray, crop_size: int, latent_size: int | tuple[int, int]) -> np.ndarray:
    """``render_motion`` of 478-point landmarks in the pixels of a ``crop_size`` crop ``[T, 478, 2]`` (training
    shards); frames without a face (NaN) get an empty condition."""
    return _render_points((np.asarray(landmarks)[:, list(MOUTH_POINTS)] + 0.5) / crop_size, latent_size)


def _render_points(points: np.ndarray, latent_size: int | tuple[int, int]) -> np.ndarray:
    import cv2

    height, width = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    scale = _RENDER_SUPERSAMPLE
    inner = slice(len(LIPS_OUTER), NUM_MOUTH_POINTS)
    out = np.zeros((len(points), MOTION_CHANNELS, height, width), np.float32)
    canvas = np.zeros((height * scale, width * scale), np.uint8)
    size = np.array([width * scale, height * scale], np.float64)
    for t, frame in enumerate(np.asarray(points, np.float64)):
        if not np.isfinite(frame).all():
            continue
        for channel, group in enumerate((frame[inner], frame[: len(LIPS_OUTER)])):
            canvas[:] = 0
            hull = cv2.convexHull(np.round((group * size - 0.5) * 16).astype(np.int32))
            cv2.fillPoly(canvas, [hull], 255, cv2.LINE_8, shift=4)
            out[t, channel] = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA) / 255.0
    return out


def require_motion_input(model) -> None:
    """A clear error for a ``SayAnythingModel`` without a mouth-motion input."""
    if not getattr(getattr(model.config, "unet", None), "motion_channels", 0):  # any family's model
        raise ValueError(
            "This model has no mouth-motion input, so a mouth motion cannot steer it: use a model "
            "trained with one (unet.motion_channels > 0, see docs/ARCHITECTURE.md, Mouth motion), or leave the "
            "motion out."
        )


def motion_condition(motion: MouthMotion, model, num_frames: int, fps: float, latent_size: int | tuple[int, int]):
    """The sampler's ``motion`` input ``torch.float32 [num_frames, 2, h, w]`` for ``model`` (a
    ``SayAnythingModel``): the motion fitted to the video (``MouthMotion.fit``: resampled to its fps, a clear
    error for another length) and rendered. A model without a motion input is a clear error."""
    import torch

    require_motion_input(model)
    return torch.from_numpy(render_motion(motion.fit(num_frames, fps), latent_size))


def target_motion(motion: MouthMotion, track: FaceTrack, fps: float) -> MouthMotion:
    """``motion`` moved onto the mouth of the face being edited (its size and rest shape)."""
    return retarget(motion, motion_from_track(track, fps).rest)


def read_mouth_motion(path, face: str = "largest", face_index: int = 0, model_folders=()) -> MouthMotion:
    """The mouth motion of a video file (``run --motion-video``), streamed through mediapipe: only the
    landmarks are kept, so a long driving video costs no more memory than its track."""
    reader = VideoReader(path)
    if reader.info.fps is None:
        raise ValueError(f"{path} is an image, not a driving video: give a video whose mouth moves.")
    fps = float(reader.info.fps)
    track = track_faces(iter(reader), fps=fps, select=face, face_index=face_index, model_folders=model_folders)
    return motion_from_track(track, fps)
