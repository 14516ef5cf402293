"""MuseTalk's face box from mediapipe landmarks, as frame -> crop affine transforms.

Upstream (TMElyralab/MuseTalk ``musetalk/utils/preprocessing.py`` and ``scripts/inference.py``, v1.5) boxes
each frame from DWPose's 68 face landmarks (the iBUG 300-W order) and stretches the box to 256 x 256:

* x: the landmarks' extent (min x to max x);
* bottom: the lowest landmark (the chin), then ``extra_margin`` (10) pixels lower, kept inside the frame;
* top: mirrored about landmark 29 (on the nose bridge): ``y29 - (bottom - y29)``, kept at 0 or below;
  ``bbox_shift`` moves landmark 29 down (0 for v1.5);
* the box, generally not square, is resized to the crop (so the face is stretched, as in training).

Frames where the box is empty (or, upstream, where it reaches past the left edge) fall back there to the
face detector's box; here they count as faces not found. We take the 68 points from the 478-point mesh with
:data:`MEDIAPIPE_68` and keep sub-pixel coordinates (upstream truncates landmarks to integers).

Transforms use the cv2.warpAffine convention of :mod:`.align` (pixel centres at integers): the box's pixel
columns ``x1 ... x2 - 1`` (upstream's ``frame[y1:y2, x1:x2]``) fill the crop exactly as ``cv2.resize`` would.
"""

from __future__ import annotations

import numpy as np

from .align import gaussian_smooth
from .track import FaceTrack

# The 68 iBUG 300-W landmarks on the 478-point mediapipe mesh (ours; both in the image's left-to-right order
# for a face looking at the camera):
#   0-16 jaw from the image-left ear to the image-right ear: the face oval from the ear-level point (127 / 356)
#        to the chin (152), picked at equal arc length on a frontal face (skimage's astronaut);
#   17-26 brows (outer to inner, then inner to outer); 27-30 nose bridge: 168 (between the eyes), 197, 5, 1
#        (the tip), at 0, 1/3, 2/3 and 1 of the way (measured on the astronaut: 197 at 0.34, 5 at 0.66);
#   31-35 nostrils and the point under the nose; 36-47 eyes (corner, two upper lid points, corner, two lower
#   lid points); 48-59 outer lips from the image-left corner over the top; 60-67 inner lips likewise.
# Only the extent, the lowest point and landmark 29 shape the box.
MEDIAPIPE_68 = (
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 1,  # nose bridge 27-30
    98, 97, 2, 326, 327,  # nostrils 31-35
    33, 160, 158, 133, 153, 144,  # image-left eye 36-41
    362, 385, 387, 263, 373, 380,  # image-right eye 42-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)  # fmt: skip
NOSE_BRIDGE_68 = 29  # the box's mirror point
EXTRA_MARGIN = 10.0  # pixels below the chin (v1.5's inference default)
MUSETALK_CROP_SIZE = 256
# Gaussian smoothing of the box in frames (ours; see musetalk_boxes). 0 turns it off.
DEFAULT_BOX_SIGMA = 1.5


def landmarks_68(landmarks: np.ndarray) -> np.ndarray:
    """The 68 iBUG points ``[..., 68, 2]`` from 478-point mediapipe landmarks ``[..., 478, 2]``."""
    return np.asarray(landmarks)[..., list(MEDIAPIPE_68), :]


def _raw_boxes(points68: np.ndarray, bbox_shift: float) -> np.ndarray:
    """Unclipped boxes ``[T, 4]`` (x1, y1, x2, y2 without the margin) from 68 points ``[T, 68, 2]``."""
    x1 = points68[..., 0].min(axis=-1)
    x2 = points68[..., 0].max(axis=-1)
    bottom = points68[..., 1].max(axis=-1)
    mirror = points68[..., NOSE_BRIDGE_68, 1] + bbox_shift
    top = mirror - (bottom - mirror)
    return np.stack([x1, top, x2, bottom], axis=-1)


def musetalk_boxes(
    track: FaceTrack,
    extra_margin: float = EXTRA_MARGIN,
    bbox_shift: float = 0.0,
    temporal_sigma: float = DEFAULT_BOX_SIGMA,
    clip_to_frame: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """MuseTalk's box per frame: ``(boxes float64 [T, 4] as x1, y1, x2, y2 in pixels, found bool [T])``.

    Args:
        track: the face's landmarks (already One-Euro smoothed by ``track_faces``).
        extra_margin: pixels added below the chin (upstream's 10 px at any resolution).
        bbox_shift: moves the mirror point down (v1's tuning knob; 0 for v1.5).
        temporal_sigma: Gaussian smoothing of the box centre and size over frames, within runs of found frames
            (ours; 0 = off). The box follows the chin, so without it the crop's scale breathes with the jaw
            and with landmark noise; see the measurement in the report.
        clip_to_frame: keep the top at >= 0 and the bottom at <= the frame height, as upstream does (the
            stretch then changes near the frame's edges).

    Frames without a face (or with an empty box) get the box interpolated from their neighbours, so a crop is
    always defined, and ``found`` False. Raises ``ValueError`` when no frame has a face.
    """
    track.require_face()
    height = track.frame_size[0]
    found = track.found.copy()
    boxes = np.zeros((track.num_frames, 4))
    boxes[found] = _raw_boxes(landmarks_68(track.landmarks[found]).astype(np.float64), bbox_shift)
    valid = found & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not valid.any():
        raise ValueError("No frame gives a face box (the landmarks have no extent); is the face visible?")
    # Smooth (centre, size), which move independently, not the edges.
    x1, y1, x2, y2 = boxes.T
    params = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
    for start, stop in zip(edges[0::2], edges[1::2]):
        params[start:stop] = gaussian_smooth(params[start:stop], temporal_sigma)
    index = np.flatnonzero(valid)
    missing = np.flatnonzero(~valid)
    for k in range(4):
        params[missing, k] = np.interp(missing, index, params[index, k])
    cx, cy, width, box_height = params.T
    boxes = np.stack([cx - width / 2, cy - box_height / 2, cx + width / 2, cy + box_height / 2 + extra_margin], axis=1)
    if clip_to_frame:
        boxes[:, 1] = np.maximum(boxes[:, 1], 0.0)
        boxes[:, 3] = np.minimum(boxes[:, 3], float(height))
        degenerate = boxes[:, 3] <= boxes[:, 1] + 1.0
        if degenerate.any():  # a face entirely outside the frame: keep a one-pixel box, never a NaN transform
            boxes[degenerate, 3] = boxes[degenerate, 1] + 1.0
            valid &= ~degenerate
    return boxes, valid


def box_transforms(boxes: np.ndarray, size: int = MUSETALK_CROP_SIZE) -> np.ndarray:
    """Transforms ``float32 [T, 2, 3]`` (frame -> crop, cv2.warpAffine convention) stretching each box
    ``(x1, y1, x2, y2)`` (pixel columns ``x1 ... x2 - 1``) onto a ``size`` x ``size`` crop, as ``cv2.resize``
    of ``frame[y1:y2, x1:x2]`` maps pixels: ``u = (x - x1 + 0.5) * size / (x2 - x1) - 0.5``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    sx = size / (boxes[:, 2] - boxes[:, 0])
    sy = size / (boxes[:, 3] - boxes[:, 1])
    transforms = np.zeros((len(boxes), 2, 3))
    transforms[:, 0, 0] = sx
    transforms[:, 0, 2] = (0.5 - boxes[:, 0]) * sx - 0.5
    transforms[:, 1, 1] = sy
    transforms[:, 1, 2] = (0.5 - boxes[:, 1]) * sy - 0.5
    return transforms.astype(np.float32)


def musetalk_crop_transforms(
    track: FaceTrack,
    size: int = MUSETALK_CROP_SIZE,
    extra_margin: float = EXTRA_MARGIN,
    bbox_shift: float = 0.0,
    temporal_sigma: float = DEFAULT_BOX_SIGMA,
    clip_to_frame: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """MuseTalk's crops as ``(transforms float32 [T, 2, 3], found bool [T])``: frame -> crop affine transforms
    (for ``align.warp_to_crop`` / ``paste_back``) of the boxes of :func:`musetalk_boxes` (same arguments).

    Every transform is finite; frames with ``found`` False have interpolated boxes and should not be pasted
    back (pass ``found`` to ``paste_back``). The crop is stretched, not a similarity: the face's aspect changes.
    """
    boxes, found = musetalk_boxes(track, extra_margin, bbox_shift, temporal_sigma, clip_to_frame)
    return box_transforms(boxes, size), found
