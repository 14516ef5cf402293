"""The evaluation's ruler: mouth opening measured from pixels, without any model (ours).

Every toy character's mouth interior has the same dark colour. In a band of columns around the
mouth centre (from the lip-corner landmarks) the ruler sums a soft "darkness" membership per pixel,
i.e. the interior's height in pixels, and divides by the face's half-width so it is scale-free.
"""

from __future__ import annotations

import numpy as np

from .characters import MOUTH_INTERIOR

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_INTERIOR_LUMA = float(np.dot(_LUMA, MOUTH_INTERIOR))
# Interior opening = 0.2 * face half-width * opening on each side of the centre line.
_FULL_OPEN = 0.4


def _darkness_and_mouths(frames: np.ndarray, landmarks: np.ndarray, name: str):
    """Per pixel: how much it looks like the mouth interior (0..1, [T, H, W]); per frame: the mouth centre
    (x, y), the face's and the mouth's half-widths (from landmarks that do not move with the opening)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} expects frames [T, H, W, 3], got {frames.shape}")
    luma = frames.astype(np.float32) @ _LUMA
    darkness = np.clip((_INTERIOR_LUMA + 34.0 - luma) / 25.0, 0.0, 1.0)
    corners = landmarks[:, [61, 291]]
    centres = corners.mean(1)
    face_half = 0.5 * np.linalg.norm(landmarks[:, 454] - landmarks[:, 234], axis=-1)
    mouth_half = 0.5 * np.linalg.norm(corners[:, 1] - corners[:, 0], axis=-1)
    return darkness, centres, face_half, mouth_half


def measure_opening(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Measured opening per frame in (roughly) ground-truth units 0..1.

    frames: uint8 [T, S, S, 3]; landmarks: [T, 478, 2] of the source (mouth corners 61/291 and the
    face's side points 234/454 only; none of them moves with the opening).
    """
    darkness, centres, face_halves, mouth_halves = _darkness_and_mouths(frames, landmarks, "measure_opening")
    height, width = darkness.shape[1:]
    result = np.zeros(len(darkness), np.float32)
    for i, ((centre_x, centre_y), face_half, mouth_half) in enumerate(zip(centres, face_halves, mouth_halves)):
        x0, x1 = int(round(centre_x - 0.35 * mouth_half)), int(round(centre_x + 0.35 * mouth_half)) + 1
        y0, y1 = int(round(centre_y - 0.45 * face_half)), int(round(centre_y + 0.45 * face_half)) + 1
        x0, x1, y0, y1 = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
        column_heights = darkness[i, y0:y1, x0:x1].sum(0)
        result[i] = column_heights.mean() / (_FULL_OPEN * face_half) if column_heights.size else 0.0
    return result


def measure_width(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Measured width of the open mouth per frame: the dark interior's extent along the lips' centre line,
    over the face's half-width (scale-free); ~0 where the mouth is shut. Same inputs as ``measure_opening``."""
    darkness, centres, face_halves, mouth_halves = _darkness_and_mouths(frames, landmarks, "measure_width")
    height, width = darkness.shape[1:]
    result = np.zeros(len(darkness), np.float32)
    for i, ((centre_x, centre_y), face_half, mouth_half) in enumerate(zip(centres, face_halves, mouth_halves)):
        x0 = max(int(round(centre_x - 1.6 * mouth_half)), 0)
        x1 = min(int(round(centre_x + 1.6 * mouth_half)) + 1, width)
        y0, y1 = max(int(round(centre_y)) - 1, 0), min(int(round(centre_y)) + 2, height)
        band = darkness[i, y0:y1, x0:x1]
        result[i] = band.max(0).sum() / face_half if band.size else 0.0
    return result
