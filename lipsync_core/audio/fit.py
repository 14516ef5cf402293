"""Fit audio and video lengths at any frame rate, in exact rational arithmetic (no drift on long clips)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .io import Audio

FIT_MODES = ("cut", "pad_silence", "loop", "pingpong")

FpsLike = int | float | Fraction | str


def as_fps(fps: FpsLike) -> Fraction:
    """A frame rate as an exact fraction; NTSC rates given as floats (23.976, 29.97, 59.94) become n*1000/1001."""
    if isinstance(fps, Fraction):
        value = fps
    elif isinstance(fps, str):
        value = Fraction(fps)  # "30000/1001" or "25"
    elif isinstance(fps, int):
        value = Fraction(fps)
    else:
        fps = float(fps)
        if not math.isfinite(fps):
            raise ValueError(f"fps must be a finite positive number, got {fps}.")
        ntsc = round(fps * 1.001)
        if ntsc > 0 and abs(fps - ntsc / 1.001) < 5e-3 and abs(fps - ntsc) > 5e-3:
            value = Fraction(ntsc * 1000, 1001)
        else:
            value = Fraction(fps).limit_denominator(1001)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    return value


def frame_count(num_samples: int, sample_rate: int, fps: FpsLike) -> int:
    """Number of whole video frames covered by ``num_samples`` audio samples (nearest, exact arithmetic)."""
    exact = Fraction(int(num_samples), int(sample_rate)) * as_fps(fps)
    return int(math.floor(exact + Fraction(1, 2)))


def frame_start_sample(frame_index: int, sample_rate: int, fps: FpsLike) -> int:
    """First audio sample of video frame ``frame_index`` (exact, never accumulated)."""
    exact = Fraction(int(frame_index)) * int(sample_rate) / as_fps(fps)
    return int(math.floor(exact + Fraction(1, 2)))


@dataclass
class FitResult:
    """Output of :func:`fit_audio_video`.

    ``frame_indices`` int64 ``[num_frames]``: for each output frame, the input video frame to show.
    ``audio``: the audio trimmed or padded to exactly ``num_frames / fps`` seconds.
    """

    frame_indices: np.ndarray
    audio: Audio
    num_frames: int
    fps: Fraction

    @property
    def duration(self) -> Fraction:
        return Fraction(self.num_frames) / self.fps


def _video_indices(num_video_frames: int, num_frames: int, mode: str) -> np.ndarray:
    steps = np.arange(num_frames, dtype=np.int64)
    if mode == "pingpong" and num_video_frames > 1:
        period = 2 * (num_video_frames - 1)  # 0 1 2 .. n-1 n-2 .. 1 | 0 1 ..
        phase = steps % period
        return np.where(phase < num_video_frames, phase, period - phase)
    if mode in ("loop", "pingpong"):
        return steps % num_video_frames
    return np.minimum(steps, num_video_frames - 1)


def fit_audio_video(audio: Audio, num_video_frames: int, fps: FpsLike, mode: str = "cut") -> FitResult:
    """Make audio and video the same length.

    Modes:
    - ``cut``: the shorter of the two sets the length; the longer is cut.
    - ``pad_silence``: the video sets the length; audio is padded with silence (or cut).
    - ``loop``: the audio sets the length; the video repeats from the start (or is cut).
    - ``pingpong``: the audio sets the length; the video plays forwards then backwards (or is cut).
    """
    if mode not in FIT_MODES:
        raise ValueError(f"Unknown fit mode {mode!r}; choose one of {', '.join(FIT_MODES)}.")
    if num_video_frames < 1:
        raise ValueError("The video has no frames; give at least one frame (an image is a one-frame video).")
    if audio.num_samples == 0:
        raise ValueError("The audio is empty (0 samples); give audio that contains sound.")
    fps = as_fps(fps)
    audio_frames = frame_count(audio.num_samples, audio.sample_rate, fps)
    if mode == "cut":
        num_frames = min(num_video_frames, audio_frames)
    elif mode == "pad_silence":
        num_frames = num_video_frames
    else:
        num_frames = audio_frames
    if num_frames < 1:
        raise ValueError(
            f"The audio ({audio.duration:.3f} s) is shorter than one video frame at {float(fps):.3f} fps."
        )
    num_samples = frame_start_sample(num_frames, audio.sample_rate, fps)
    waveform = audio.waveform[:num_samples]
    if waveform.numel() < num_samples:
        waveform = torch.nn.functional.pad(waveform, (0, num_samples - waveform.numel()))
    indices = _video_indices(num_video_frames, num_frames, mode)
    return FitResult(indices, Audio(waveform, audio.sample_rate), num_frames, fps)
