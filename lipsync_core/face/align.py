"""Align, crop and paste back: a temporally smooth similarity transform from landmarks to a square crop.

Transforms are ``float32 [T, 2, 3]`` affine matrices frame -> crop in the cv2.warpAffine convention
(pixel centres at integer coordinates), for a crop of ``size`` x ``size`` pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

from .smoothing import reflect_pad
from .track import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, MOUTH_CORNERS, NOSE_TIP, FaceTrack

DEFAULT_CROP_SIZE = 512

# Five reference points (image-left eye, image-right eye, nose tip, mouth corners) of a frontal face on
# a 112-pixel grid: the layout widely used for face alignment (ArcFace). We place it in our crop scaled by
# ``zoom`` so the whole lower face, chin and some background fit around it (ours).
_FIVE_POINTS_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


STABLE_POINTS = 3  # of the five: both eyes and the nose tip


def crop_template(size: int = DEFAULT_CROP_SIZE, zoom: float = 0.75, centre_y: float = 0.43) -> np.ndarray:
    """Where the five reference points go in the crop ``[5, 2]``; ``zoom`` is the face scale in the crop."""
    relative = (_FIVE_POINTS_112 / 112.0 - 0.5) * zoom + np.array([0.5, centre_y])
    return relative * size - 0.5


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners ``[..., 5, 2]`` from 478-point landmarks ``[..., 478, 2]``."""
    return np.stack(
        [
            landmarks[..., list(EYE_IMAGE_LEFT), :].mean(axis=-2),
            landmarks[..., list(EYE_IMAGE_RIGHT), :].mean(axis=-2),
            landmarks[..., NOSE_TIP, :],
            landmarks[..., MOUTH_CORNERS[0], :],
            landmarks[..., MOUTH_CORNERS[1], :],
        ],
        axis=-2,
    )


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) ``[2, 3]``."""
    p = source[:, 0] + 1j * source[:, 1]
    q = target[:, 0] + 1j * target[:, 1]
    pc, qc = p - p.mean(), q - q.mean()
    a = (qc * np.conj(pc)).sum() / max((np.abs(pc) ** 2).sum(), 1e-12)
    b = q.mean() - a * p.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def _to_params(matrix: np.ndarray, size: int) -> np.ndarray:
    """(frame x, frame y of the crop centre, log scale, angle): smooth to filter, unlike matrix entries."""
    a, b = matrix[0, 0], matrix[1, 0]
    scale, angle = np.hypot(a, b), np.arctan2(b, a)
    centre = cv2.invertAffineTransform(matrix) @ np.array([(size - 1) / 2, (size - 1) / 2, 1.0])
    return np.array([centre[0], centre[1], np.log(scale), angle])


def _from_params(params: np.ndarray, size: int) -> np.ndarray:
    x, y, log_scale, angle = params
    scale = np.exp(log_scale)
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    c = (size - 1) / 2
    return np.array([[a, -b, c - (a * x - b * y)], [b, a, c - (b * x + a * y)]])


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0; the ends are extended by point reflection (no end bias)."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded, pad = reflect_pad(values, radius)
    padded = np.concatenate([np.repeat(padded[:1], radius - pad, 0), padded, np.repeat(padded[-1:], radius - pad, 0)])
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(values.shape[1])], axis=1)


def align_transforms(
    track: FaceTrack,
    size: int = DEFAULT_CROP_SIZE,
    zoom: float = 0.75,
    centre_y: float = 0.43,
    temporal_sigma: float = 0.0,
) -> np.ndarray:
    """Transforms frame -> crop ``float32 [T, 2, 3]`` from the track's landmarks.

    Each frame's eyes and nose tip (from the track's One-Euro-smoothed landmarks) are fitted to their
    places in :func:`crop_template`. ``temporal_sigma`` > 0 adds a Gaussian smoothing (in frames) of the crop
    centre, scale and angle within runs of found frames; off by default because the adaptive One-Euro
    smoothing already steadies still faces without lagging behind fast ones.
    Frames without a face get a transform interpolated from their neighbours so a crop is always
    defined (they are never pasted back). Raises one clear error when no frame has a face.
    """
    track.require_face()
    # Fitted on the eyes and the nose tip only: the mouth corners move with speech, and a crop that
    # followed them would carry the source mouth's motion into everything the model sees (leakage).
    template = crop_template(size, zoom, centre_y)[:STABLE_POINTS]
    found = np.flatnonzero(track.found)
    params = np.zeros((track.num_frames, 4))
    points = five_points(track.landmarks)[..., :STABLE_POINTS, :]
    for t in found:
        params[t] = _to_params(similarity_transform(points[t], template), size)
    params[found, 3] = np.unwrap(params[found, 3])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], track.found.astype(np.int8), [0]])))
    for start, stop in zip(edges[0::2], edges[1::2]):
        params[start:stop] = gaussian_smooth(params[start:stop], temporal_sigma)
    missing = np.flatnonzero(~track.found)
    for k in range(4):
        params[missing, k] = np.interp(missing, found, params[found, k])
    return np.stack([_from_params(p, size) for p in params]).astype(np.float32)


def transform_points(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Apply ``[T, 2, 3]`` transforms to points ``[T, N, 2]``."""
    return np.einsum("tij,tnj->tni", transforms[:, :, :2], points) + transforms[:, None, :, 2]


def crop_track(track: FaceTrack, transforms: np.ndarray, size: int = DEFAULT_CROP_SIZE) -> FaceTrack:
    """The track in crop coordinates (e.g. to draw the mask directly in the crop)."""
    raw = None if track.raw_landmarks is None else transform_points(track.raw_landmarks, transforms)
    return FaceTrack(transform_points(track.landmarks, transforms), track.found, (size, size), raw)


def _frames_as_uint8(frame) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frame


def warp_to_crop(
    frames: np.ndarray | Iterable,
    transforms: np.ndarray,
    size: int = DEFAULT_CROP_SIZE,
) -> np.ndarray:
    """Crops ``uint8 [T, size, size, C]`` (or ``[T, size, size]`` for masks given as float ``[T, H, W]``).

    Images are bilinearly resampled with the frame edge repeated where the crop reaches outside the
    frame (faces near a border); float masks outside the frame become 0.
    """
    out = []
    for frame, matrix in zip(frames, transforms):
        if hasattr(frame, "detach"):
            frame = frame.detach().cpu().numpy()
        frame = np.asarray(frame)
        is_mask = frame.ndim == 2
        if not is_mask:
            frame = _frames_as_uint8(frame)
        border = cv2.BORDER_CONSTANT if is_mask else cv2.BORDER_REPLICATE
        src = frame.astype(np.float32) if is_mask else frame
        out.append(
            cv2.warpAffine(src, matrix.astype(np.float64), (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        )
    if len(out) != len(transforms):
        raise ValueError(f"Got {len(out)} frames for {len(transforms)} transforms; they must match.")
    return np.stack(out)


def _crop_edge_fade(size: int, width: float) -> np.ndarray:
    """1 inside the crop, falling to 0 over ``width`` pixels at its edges: no hard crop border shows."""
    ramp = np.clip((np.arange(size) + 0.5) / max(width, 1e-6), 0.0, 1.0)
    edge = np.minimum(ramp, ramp[::-1]).astype(np.float32)
    return np.minimum(edge[:, None], edge[None, :])


def paste_back(
    frames: np.ndarray | torch.Tensor,
    crops: np.ndarray | torch.Tensor,
    masks: np.ndarray,
    transforms: np.ndarray,
    found: Sequence[bool] | None = None,
    edge_feather: float = 0.02,
    inplace: bool = False,
):
    """Blend edited crops back into the frames where the (crop-space) ``masks`` are above 0.

    ``frames`` ``[T, H, W, 3]`` uint8 or float 0..1 (numpy or torch), ``crops`` ``[T, S, S, 3]`` (uint8 or
    float 0..1), ``masks`` float ``[T, S, S]`` in 0..1. Returns new frames of the input's type. Pixels where
    the warped mask is 0, and every frame with ``found`` False, are returned bit-identical. The mask is
    additionally faded to 0 over ``edge_feather`` x S at the crop's border. ``inplace=True`` writes into
    ``frames`` (a numpy array or CPU tensor the caller owns) instead of a copy: a fresh 1080p video
    costs more to allocate and copy than the blending itself.
    """
    is_torch = hasattr(frames, "detach")
    if is_torch:
        import torch

        device = frames.device
        frames_np = frames.detach().cpu().numpy()
    else:
        frames_np = np.asarray(frames)
    if hasattr(crops, "detach"):
        crops = crops.detach().cpu().numpy()
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    crops, masks = np.asarray(crops), np.asarray(masks, dtype=np.float32)
    num_frames, height, width = frames_np.shape[:3]
    size = crops.shape[1]
    if not (len(crops) == len(masks) == len(transforms) == num_frames):
        raise ValueError(
            f"paste_back needs one crop, mask and transform per frame: {num_frames} frames, {len(crops)} crops, "
            f"{len(masks)} masks, {len(transforms)} transforms."
        )
    if crops.shape[1:3] != (size, size) or masks.shape[1:] != (size, size):
        raise ValueError(f"Crops {crops.shape} and masks {masks.shape} must be square [T, S, S(, 3)] of one size.")
    found = np.ones(num_frames, bool) if found is None else np.asarray(found, bool)
    floating = frames_np.dtype != np.uint8
    out = frames_np if inplace else frames_np.copy()
    fade = _crop_edge_fade(size, edge_feather * size)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for t in np.flatnonzero(found):
        crop_mask = masks[t] * fade
        rows, cols = np.flatnonzero(crop_mask.any(axis=1)), np.flatnonzero(crop_mask.any(axis=0))
        if rows.size == 0:
            continue
        matrix = transforms[t].astype(np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        x_lo, x_hi, y_lo, y_hi = cols[0] - 1, cols[-1] + 1, rows[0] - 1, rows[-1] + 1
        corners = np.array([[x_lo, y_lo], [x_hi, y_lo], [x_lo, y_hi], [x_hi, y_hi]], np.float64)
        frame_corners = corners @ inverse[:, :2].T + inverse[:, 2]
        x0, y0 = np.floor(frame_corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(frame_corners.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        # frame -> crop for the region of interest only: shift the origin to (x0, y0)
        roi_matrix = matrix.copy()
        roi_matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
        roi_size = (x1 - x0, y1 - y0)
        alpha = cv2.warpAffine(crop_mask, roi_matrix, roi_size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        crop = crops[t]
        if floating != (crop.dtype != np.uint8):  # bring the crop to the frames' value range
            crop = (
                crop.astype(np.float32) * (1.0 / 255.0)
                if floating
                else np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8)
            )
        edited = cv2.warpAffine(crop, roi_matrix, roi_size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        region = out[t, y0:y1, x0:x1]
        if floating:
            blended = region + (edited.astype(region.dtype) - region) * alpha[..., None]
        else:
            blended = cv2.blendLinear(region, edited, 1.0 - alpha, alpha)  # rounds to nearest
        # Only pixels under the mask are written: everything else stays bit-identical.
        np.copyto(region, blended.astype(region.dtype, copy=False), where=(alpha > 0)[..., None])
    if is_torch:
        if not inplace:
            return torch.from_numpy(out).to(device)
        if device.type != "cpu":  # the numpy view was a copy: bring the result back
            frames.copy_(torch.from_numpy(out))
        return frames
    return out
