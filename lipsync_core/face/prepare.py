"""One call from video frames to what the model edits: aligned crops, crop-space masks and transforms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .align import (
    DEFAULT_CROP_SIZE,
    _from_params,
    _to_params,
    align_transforms,
    crop_track,
    gaussian_smooth,
    warp_to_crop,
)
from .landmarks import LandmarkBackend, track_faces
from .mask import DEFAULTS, MASK_MODES, combine_masks, face_masks
from .track import FaceTrack

# Where a user mask's bounding box goes in the crop when no face is detected (ours): a square of this
# share of the crop, centred where the lower face sits in landmark-aligned crops.
_MASK_BOX_SHARE = 0.55
_MASK_BOX_CENTRE = (0.5, 0.64)


@dataclass
class FaceCrops:
    """Everything the model and the paste-back need for one video.

    ``crops`` uint8 ``[T, S, S, 3]``; ``masks`` float32 ``[T, S, S]`` (1 = regenerate, crop space);
    ``transforms`` float32 ``[T, 2, 3]`` frame -> crop; ``editable`` bool ``[T]``: frames that get edited
    and pasted back (a face was found, or a user mask says where); ``track``: the face track (frame space).
    """

    crops: np.ndarray
    masks: np.ndarray
    transforms: np.ndarray
    editable: np.ndarray
    track: FaceTrack
    size: int


def _as_uint8_video(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Video frames must be [T, H, W, 3] RGB, got shape {frames.shape}.")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frames


def _as_user_masks(user_mask, num_frames: int, frame_size) -> np.ndarray:
    if hasattr(user_mask, "detach"):
        user_mask = user_mask.detach().cpu().numpy()
    user_mask = np.asarray(user_mask, dtype=np.float32)
    if user_mask.ndim == 2:
        user_mask = user_mask[None]
    if user_mask.ndim != 3 or user_mask.shape[1:] != tuple(frame_size):
        raise ValueError(
            f"The mask is {tuple(user_mask.shape)} but the frames are {tuple(frame_size)}; give a mask of the "
            "video's size ([H, W] or [frames, H, W])."
        )
    if user_mask.shape[0] == 1 and num_frames > 1:
        user_mask = np.broadcast_to(user_mask, (num_frames, *frame_size))
    if user_mask.shape[0] != num_frames:
        raise ValueError(
            f"The mask has {user_mask.shape[0]} frames but the video has {num_frames}; "
            "give one per frame or one for all."
        )
    return np.clip(user_mask, 0.0, 1.0)


def mask_box_transforms(user_masks: np.ndarray, size: int = DEFAULT_CROP_SIZE, temporal_sigma: float = 2.0):
    """Transforms ``[T, 2, 3]`` that frame each user mask's bounding box, and which frames have one ``[T]``.

    For faces the landmark model cannot see (stylised characters, heavy occlusion): the mask's box is
    placed where the lower face sits in landmark-aligned crops, smoothed over time.
    """
    has_mask = (user_masks > 0.5).any(axis=(1, 2))
    params = np.zeros((len(user_masks), 4))
    for t in np.flatnonzero(has_mask):
        ys, xs = np.nonzero(user_masks[t] > 0.5)
        centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
        side = max(xs.max() - xs.min(), ys.max() - ys.min(), 1) + 1
        scale = _MASK_BOX_SHARE * size / side
        target = np.array(_MASK_BOX_CENTRE) * size - 0.5
        matrix = np.array([[scale, 0, target[0] - scale * centre[0]], [0, scale, target[1] - scale * centre[1]]])
        params[t] = _to_params(matrix, size)
    idx = np.flatnonzero(has_mask)
    if idx.size:
        params[idx] = gaussian_smooth(params[idx], temporal_sigma)
        for k in range(4):
            params[:, k] = np.interp(np.arange(len(params)), idx, params[idx, k])
    return np.stack([_from_params(p, size) for p in params]).astype(np.float32), has_mask


def crop_transforms(track: FaceTrack, size: int, user_masks: np.ndarray | None = None, face_transforms=None):
    """Frame -> crop transforms ``[T, 2, 3]`` and which frames get edited ``[T]``: framed on the face where it was
    found, around the user's mask (``[T, H, W]``, where it leads) in frames without a face. Raises the one
    clear error when nothing can be edited.

    ``face_transforms(track, size) -> (transforms, found)``: how a model frames a face (default: aligned on the
    eyes and nose, :func:`align_transforms`, with the track's ``found``)."""
    mask_led = np.zeros(track.num_frames, bool)
    if user_masks is not None:
        mask_transforms, mask_led = mask_box_transforms(user_masks, size)
        mask_led &= ~track.found
    if not track.any_found and not mask_led.any():
        track.require_face()
    if not track.any_found:
        return mask_transforms, mask_led
    if face_transforms is None:
        transforms, found = align_transforms(track, size), track.found
    else:
        transforms, found = face_transforms(track, size)
    if mask_led.any():
        transforms[mask_led] = mask_transforms[mask_led]
    return transforms, found | mask_led


def prepare_face_crops(
    frames,
    fps: float = 25.0,
    size: int = DEFAULT_CROP_SIZE,
    upper_edge: str = DEFAULTS.upper_edge,
    expand: float = DEFAULTS.mask_expand,
    feather: float = DEFAULTS.mask_feather,
    mask_hold: float = DEFAULTS.mask_hold,
    user_mask=None,
    mask_mode: str = "auto",
    select: str = "largest",
    face_index: int = 0,
    backend: str | LandmarkBackend = "auto",
    model_folders: Sequence[str | Path] = (),
    track: FaceTrack | None = None,
    fill_gaps: int = 0,
    progress=None,
) -> FaceCrops:
    """Track the face (unless ``track`` is given), align, crop and draw the editing mask in crop space.

    ``frames``: uint8 ``[T, H, W, 3]`` or float 0..1 (numpy or torch, ComfyUI IMAGE). ``user_mask`` (frame
    space, ``[H, W]`` or ``[T, H, W]``) combines by ``mask_mode`` (auto / replace / intersect / union);
    with ``replace`` or ``union`` it also marks frames to edit where no face is found. Raises one clear
    error when nothing can be edited (no face in any frame and no user mask). ``mask_hold`` (seconds):
    each frame's landmark mask covers the outlines of that much time before and after it (in crop
    space, see ``hold`` in :func:`face_masks`), so the mask does not move with the source jaw.
    ``fill_gaps`` > 0 bridges
    detector dropouts of up to that many frames (:meth:`FaceTrack.fill_short_gaps`).
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"Unknown mask mode {mask_mode!r}; choose one of {', '.join(MASK_MODES)}.")
    if user_mask is None and mask_mode != "auto":
        raise ValueError(f"Mask mode {mask_mode!r} needs a user mask; connect one or use mode 'auto'.")
    # A torch IMAGE batch is converted frame by frame as it is warped: no uint8 copy of the whole video.
    video = (
        frames if hasattr(frames, "detach") and frames.ndim == 4 and frames.shape[-1] == 3 else _as_uint8_video(frames)
    )
    num_frames, height, width = video.shape[:3]
    if track is None:
        track = track_faces(
            video,
            fps=fps,
            select=select,
            face_index=face_index,
            backend=backend,
            model_folders=model_folders,
            progress=progress,
        )
    elif track.num_frames != num_frames or track.frame_size != (height, width):
        raise ValueError(
            f"The face track ({track.num_frames} frames of {track.frame_size}) does not match the video "
            f"({num_frames} of {(height, width)})."
        )
    if fill_gaps > 0:
        track = track.fill_short_gaps(fill_gaps)

    user = None if user_mask is None or mask_mode == "auto" else _as_user_masks(user_mask, num_frames, (height, width))
    transforms, editable = crop_transforms(track, size, user if mask_mode in ("replace", "union") else None)
    crops = warp_to_crop(video, transforms, size)
    hold = int(round(mask_hold * float(fps)))
    masks = face_masks(crop_track(track, transforms, size), upper_edge, expand, feather, hold=hold)
    if user is not None:
        masks = combine_masks(masks, warp_to_crop(user, transforms, size), mask_mode)
    masks[~editable] = 0.0
    return FaceCrops(crops, masks.astype(np.float32), transforms, editable, track, size)
