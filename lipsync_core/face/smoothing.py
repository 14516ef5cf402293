"""Temporal smoothing of landmark tracks: the One-Euro filter, run forwards and backwards (no lag offline)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroSettings:
    """One-Euro filter (Casiez et al. 2012) parameters, in units of face size per second.

    ``min_cutoff`` (Hz): smoothing of a still face (lower = steadier). ``beta``: how fast the cutoff
    rises with speed (higher = less lag on fast moves). ``derivative_cutoff`` (Hz): smoothing of the speed.
    """

    min_cutoff: float = 0.7
    beta: float = 4.0
    derivative_cutoff: float = 1.0


DEFAULT_SMOOTHING = OneEuroSettings()


def _alpha(cutoff: np.ndarray, dt: float) -> np.ndarray:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(signal: np.ndarray, fps: float, settings: OneEuroSettings = DEFAULT_SMOOTHING) -> np.ndarray:
    """Causal One-Euro filter along axis 0 of ``signal`` ``[T, ...]`` (every other element independently)."""
    out = np.empty_like(signal, dtype=np.float64)
    if signal.shape[0] == 0:
        return out
    dt = 1.0 / fps
    value = signal[0].astype(np.float64)
    speed = np.zeros_like(value)
    out[0] = value
    alpha_d = _alpha(np.asarray(settings.derivative_cutoff), dt)
    for t in range(1, signal.shape[0]):
        raw_speed = (signal[t] - value) / dt
        speed = speed + alpha_d * (raw_speed - speed)
        alpha = _alpha(settings.min_cutoff + settings.beta * np.abs(speed), dt)
        value = value + alpha * (signal[t] - value)
        out[t] = value
    return out


def reflect_pad(values: np.ndarray, pad: int):
    """Extend ``values`` ``[T, ...]`` at both ends by point reflection (``2 x0 - x[k]``), so that steady
    motion continues through the ends. Returns the padded array and the pad length used."""
    pad = min(pad, len(values) - 1)
    if pad <= 0:
        return values, 0
    head = 2 * values[0] - values[pad:0:-1]
    tail = 2 * values[-1] - values[-2 : -pad - 2 : -1]
    return np.concatenate([head, values, tail]), pad


def smooth_track_points(
    points: np.ndarray,
    found: np.ndarray,
    fps: float,
    scale: float,
    settings: OneEuroSettings = DEFAULT_SMOOTHING,
) -> np.ndarray:
    """Smooth ``points`` ``[T, N, 2]`` over each run of consecutive found frames.

    The filter runs forwards and backwards and the two are averaged, so moves are not delayed; each run
    is first extended by point reflection (:func:`reflect_pad`) so its ends carry no start-up error.
    ``scale`` (pixels, e.g. the median face size) makes the settings independent of resolution.
    A run restarts after every frame without a face.
    """
    out = points.astype(np.float32).copy()
    if scale <= 0 or not np.isfinite(scale):
        return out
    found = np.asarray(found, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], found.astype(np.int8), [0]])))
    for start, stop in zip(edges[0::2], edges[1::2]):
        run, pad = reflect_pad(points[start:stop].astype(np.float64) / scale, 12)
        forward = one_euro(run, fps, settings)
        backward = one_euro(run[::-1], fps, settings)[::-1]
        smooth = (forward + backward) * 0.5 * scale
        out[start:stop] = smooth[pad : len(smooth) - pad].astype(np.float32)
    return out
