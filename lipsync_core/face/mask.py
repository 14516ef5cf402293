"""The adaptive editing mask: the lower face from jaw landmarks, expanded, feathered, with a chosen upper edge.

Only the 478-point landmark array is used, so the mask works on any :class:`FaceTrack` (detected, or
built from synthetic landmarks) and in any coordinate frame (video frames or the aligned crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

from ..configs import MASK_MODES, UPPER_EDGES, ModelDefaults
from .track import (
    EYE_IMAGE_LEFT,
    EYE_IMAGE_RIGHT,
    LIPS_OUTER,
    LOWER_JAW,
    NOSE_BRIDGE_LOW,
    NOSE_TIP,
    FaceTrack,
    face_size,
)

DEFAULTS = ModelDefaults()

# Lower eyelid points (image left / right eye).
_LOWER_LID_LEFT, _LOWER_LID_RIGHT = 145, 374


def _up_vector(landmarks: np.ndarray) -> np.ndarray:
    """Unit vector pointing from chin to forehead, perpendicular to the eye line (head roll aware)."""
    right = landmarks[list(EYE_IMAGE_RIGHT)].mean(axis=0) - landmarks[list(EYE_IMAGE_LEFT)].mean(axis=0)
    right = right / max(np.linalg.norm(right), 1e-6)
    return np.array([right[1], -right[0]])


def _edge_point(landmarks: np.ndarray, upper_edge: str) -> np.ndarray:
    if upper_edge == "mouth":  # the nose tip: the upper lip and smiling mouth corners are well inside
        return landmarks[NOSE_TIP]
    if upper_edge == "nose":  # the lower half of the nose is inside, the eyes are far outside
        return landmarks[NOSE_BRIDGE_LOW]
    if upper_edge == "eyes":  # up to the lower eyelids
        return (landmarks[_LOWER_LID_LEFT] + landmarks[_LOWER_LID_RIGHT]) / 2
    raise ValueError(f"Unknown upper edge {upper_edge!r}; choose one of {', '.join(UPPER_EDGES)}.")


def mask_polygon(
    landmarks: np.ndarray, upper_edge: str = DEFAULTS.upper_edge, expand: float = DEFAULTS.mask_expand,
    feather: float = DEFAULTS.mask_feather
) -> np.ndarray:
    """The mask outline ``[K, 2]`` (pixels) for one frame's landmarks.

    The face outline from cheek to cheek along the jaw, pushed outwards by ``expand`` x face size,
    closed by a straight edge perpendicular to the face's up direction. That edge sits one feather
    sigma (``feather / 2`` x face size) below the ``upper_edge`` level, so the feathered mask has faded
    out by the time it reaches the named feature, but always 1.5 feathers above the highest lip point
    so the lips are fully inside whatever the expression.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    up = _up_vector(landmarks)
    size = float(face_size(landmarks))
    jaw = landmarks[list(LOWER_JAW)]
    centre = (landmarks[1] + landmarks[152]) / 2  # between nose tip and chin: the lower face's middle
    outward = jaw - centre
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-6)
    jaw = jaw + expand * size * outward
    sigma = feather * size / 2
    level = _edge_point(landmarks, upper_edge)
    lips_top = landmarks[list(LIPS_OUTER)] @ up
    height = max(level @ up - sigma, lips_top.max() + 3 * sigma)
    level = level + up * (height - level @ up)
    # Lift the two cheek ends to the edge level when it is above them, then cut everything above it.
    heights = (jaw - level) @ up
    start = jaw[0] - up * min(heights[0], 0.0)
    end = jaw[-1] - up * min(heights[-1], 0.0)
    outline = np.concatenate([start[None], jaw, end[None]])
    return _clip_below(outline, level, up)


def _clip_below(polygon: np.ndarray, point: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Part of a closed polygon on or below the line through ``point`` perpendicular to ``up``."""
    out = []
    heights = (polygon - point) @ up
    for i in range(len(polygon)):
        a, b, ha, hb = polygon[i], polygon[(i + 1) % len(polygon)], heights[i], heights[(i + 1) % len(polygon)]
        if ha <= 0:
            out.append(a)
        if (ha <= 0) != (hb <= 0):
            out.append(a + (b - a) * (ha / (ha - hb)))
    return np.asarray(out)


def render_polygon_mask(
    polygons: np.ndarray | Sequence[np.ndarray], frame_size: tuple, feather_px: float
) -> np.ndarray:
    """Filled polygon(s) ``float32 [H, W]`` in 0..1 with a Gaussian edge of ``feather_px`` (sigma = feather/2).

    Several polygons give the feathered mask of their union. Only the region around them is rasterised
    and blurred (at reduced resolution when the feather is wide), which keeps this fast on 1080p frames.
    """
    height, width = frame_size
    mask = np.zeros((height, width), np.float32)
    polygons = [polygons] if isinstance(polygons, np.ndarray) and polygons.ndim == 2 else list(polygons)
    polygons = [p for p in polygons if len(p) >= 3]
    if not polygons:
        return mask
    sigma = max(feather_px / 2.0, 0.0)
    margin = int(np.ceil(3 * sigma)) + 2
    corners = np.concatenate(polygons)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + margin + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return mask
    # Rasterise the full (unclipped) ROI so the blur sees the polygon beyond the frame edge too.
    scale = min(1.0, 3.0 / sigma) if sigma > 0 else 1.0
    roi_w, roi_h = x1 - x0, y1 - y0
    small_w, small_h = max(2, int(np.ceil(roi_w * scale))), max(2, int(np.ceil(roi_h * scale)))
    canvas = np.zeros((small_h, small_w), np.uint8)
    shift = 4  # sub-pixel precision for fillPoly
    for polygon in polygons:  # one call each: a union, whatever their overlaps
        pts = np.round(((polygon - [x0, y0] + 0.5) * scale - 0.5) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    soft = canvas.astype(np.float32) * (1.0 / 255.0)
    if sigma > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=sigma * scale, borderType=cv2.BORDER_CONSTANT)
    if scale < 1.0:
        # map ROI pixel centres back onto the small canvas
        matrix = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5]], np.float32)
        soft = cv2.warpAffine(
            soft, matrix, (roi_w, roi_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
        )
    soft[soft < 1.0 / 512] = 0.0  # exact zeros far from the face: paste-back leaves those pixels alone
    mask[cy0:cy1, cx0:cx1] = soft[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return np.clip(mask, 0.0, 1.0, out=mask)


def frame_mask(
    landmarks: np.ndarray,
    frame_size: tuple,
    upper_edge: str = DEFAULTS.upper_edge,
    expand: float = DEFAULTS.mask_expand,
    feather: float = DEFAULTS.mask_feather,
) -> np.ndarray:
    """Mask ``float32 [H, W]`` of one frame; ``expand`` and ``feather`` are fractions of the face size."""
    polygon = mask_polygon(landmarks, upper_edge, expand, feather)
    return render_polygon_mask(polygon, frame_size, feather * face_size(landmarks))


def face_masks(
    track: FaceTrack,
    upper_edge: str = DEFAULTS.upper_edge,
    expand: float = DEFAULTS.mask_expand,
    feather: float = DEFAULTS.mask_feather,
    user_mask: np.ndarray | None = None,
    mode: str = "auto",
    hold: int = 0,
    transforms: np.ndarray | None = None,
    frames: Sequence[int] | None = None,
) -> np.ndarray:
    """Editing masks ``float32 [T, H, W]`` (1 = regenerate) for every frame of ``track``.

    Frames without a face get an empty mask. ``user_mask`` (``[T, H, W]`` or ``[H, W]``, 0..1) combines
    with the landmark mask by ``mode`` (see :func:`combine_masks`).

    ``hold`` (frames, ours): each frame's landmark mask covers the union of the mask outlines of the
    frames within ``hold`` before and after it (in the same run of frames with a face). A mask that
    follows the jaw opens and closes with the source mouth, and its outline alone would tell the model
    how the source lips moved (leakage); the held mask stays still while the source talks and still
    follows slow changes of pose. The union is taken where the face stands still: in the aligned crop.
    For a track in crop coordinates give no ``transforms``; for a track in frame coordinates give the
    frame -> crop ``transforms`` ``[T, 2, 3]`` (``align_transforms``): each neighbour's outline is carried
    into this frame through the crop, so the frame-space mask warps onto the crop-space one.

    ``frames``: compute only these frames (a streaming run draws the masks chunk by chunk); the result
    is then ``[len(frames), H, W]`` and ``user_mask`` must match it.
    """
    if upper_edge not in UPPER_EDGES:
        raise ValueError(f"Unknown upper edge {upper_edge!r}; choose one of {', '.join(UPPER_EDGES)}.")
    if mode not in MASK_MODES:
        raise ValueError(f"Unknown mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}.")
    if user_mask is None and mode != "auto":
        raise ValueError(f"Mask mode {mode!r} needs a user mask; connect one or use mode 'auto'.")
    wanted = np.arange(track.num_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    height, width = track.frame_size
    masks = np.zeros((len(wanted), height, width), np.float32)
    if mode != "replace":
        run_id = np.cumsum(~track.found)  # frames of one run of found frames share an id
        polygons: dict = {}

        def outline(k: int) -> np.ndarray:
            if k not in polygons:
                polygons[k] = mask_polygon(track.landmarks[k], upper_edge, expand, feather)
            return polygons[k]

        for row, t in enumerate(wanted):
            if not track.found[t]:
                continue
            neighbours = [
                k
                for k in range(max(t - hold, 0), min(t + hold + 1, track.num_frames))
                if track.found[k] and run_id[k] == run_id[t]
            ]
            window = [outline(k) for k in neighbours]
            if transforms is not None and hold > 0:
                to_frame = cv2.invertAffineTransform(transforms[t].astype(np.float64))
                window = [
                    _through_crop(outline(k), transforms[k], to_frame) if k != t else outline(k) for k in neighbours
                ]
            masks[row] = render_polygon_mask(window, track.frame_size, feather * float(face_size(track.landmarks[t])))
    if user_mask is None:
        return masks
    return combine_masks(masks, user_mask, mode)


def _through_crop(polygon: np.ndarray, to_crop: np.ndarray, to_frame: np.ndarray) -> np.ndarray:
    """A polygon of one frame carried into the crop and from there into another frame."""
    in_crop = polygon @ to_crop[:, :2].T.astype(np.float64) + to_crop[:, 2]
    return in_crop @ to_frame[:, :2].T + to_frame[:, 2]


def combine_masks(auto: np.ndarray, user: np.ndarray | torch.Tensor, mode: str) -> np.ndarray:
    """Combine the landmark mask with a user mask.

    ``replace``: the user mask alone (occluders, faces mediapipe cannot see); ``intersect``: the landmark
    mask limited to the user mask; ``union``: both; ``auto``: the landmark mask, ignoring the user's.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"Unknown mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}.")
    if hasattr(user, "detach"):
        user = user.detach().cpu().numpy()
    user = np.asarray(user, dtype=np.float32)
    if user.ndim == 2:
        user = np.broadcast_to(user, auto.shape)
    if user.ndim == 3 and user.shape[0] == 1 and auto.shape[0] != 1:
        user = np.broadcast_to(user, auto.shape)
    if user.shape != auto.shape:
        raise ValueError(
            f"The user mask is {tuple(user.shape)} but the video needs {tuple(auto.shape)} ([frames, H, W]); "
            "give one mask per frame (or a single mask) at the video's size."
        )
    user = np.clip(user, 0.0, 1.0)
    if mode == "auto":
        return auto
    if mode == "replace":
        return np.array(user, dtype=np.float32)
    if mode == "intersect":
        return auto * user
    return np.maximum(auto, user)
