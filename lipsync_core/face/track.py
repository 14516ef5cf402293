"""FaceTrack: the per-frame 478-point landmarks of one chosen face, plus mesh index groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_LANDMARKS = 478

# mediapipe 478-point mesh topology (identical in the legacy face mesh and the Tasks FaceLandmarker).
# "Left"/"right" are the image's left and right for a face looking at the camera.
LIPS_OUTER = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375, 405, 409)
LIPS_INNER = (13, 14, 78, 80, 81, 82, 87, 88, 95, 178, 191, 308, 310, 311, 312, 317, 318, 324, 402, 415)
# Face outline from the image-left cheek (234) along the jaw and chin (152) to the image-right cheek (454).
LOWER_JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
IRIS_IMAGE_LEFT = (468, 469, 470, 471, 472)
IRIS_IMAGE_RIGHT = (473, 474, 475, 476, 477)
NOSE = (1, 2, 4, 5, 6, 19, 94, 168, 195, 197)
NOSE_TIP = 1
NOSE_BRIDGE_LOW = 195  # below the middle of the nose: the "nose" mask edge sits here
MOUTH_TOP = 0  # top of the upper lip
MOUTH_CORNERS = (61, 291)
CHIN = 152
FOREHEAD = 10
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Face size in pixels from landmarks ``[..., 478, 2]``: the larger of the cheek-to-cheek width and
    1.75 x the forehead-to-nose-tip distance (about the forehead-chin height of a closed mouth). Neither
    moves with the jaw, so a talking mouth does not change the size, and the larger of the two holds
    when the head turns (width shrinks) or nods (height shrinks)."""
    width = np.linalg.norm(landmarks[..., LOWER_JAW[0], :] - landmarks[..., LOWER_JAW[-1], :], axis=-1)
    height = 1.75 * np.linalg.norm(landmarks[..., FOREHEAD, :] - landmarks[..., NOSE_TIP, :], axis=-1)
    return np.maximum(width, height)


@dataclass
class FaceTrack:
    """One face followed through a video.

    ``landmarks`` float32 ``[T, 478, 2]``: pixel x, y (pixel centres at integers, the cv2 convention),
    temporally smoothed; NaN where no face was found. ``found`` bool ``[T]``. ``frame_size`` ``(H, W)``.
    ``raw_landmarks`` (optional, same layout): the detector's unsmoothed output, e.g. for lip measures.
    A track can also be built by hand from synthetic landmarks (only the array layout matters).
    """

    landmarks: np.ndarray
    found: np.ndarray
    frame_size: tuple[int, int]
    raw_landmarks: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        self.found = np.asarray(self.found, dtype=bool).reshape(-1)
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (NUM_LANDMARKS, 2):
            raise ValueError(f"FaceTrack.landmarks must be [T, {NUM_LANDMARKS}, 2], got {self.landmarks.shape}.")
        if self.found.shape[0] != self.landmarks.shape[0]:
            raise ValueError(
                f"FaceTrack.found has {self.found.shape[0]} frames but landmarks have {self.landmarks.shape[0]}."
            )
        if len(self.frame_size) != 2 or min(self.frame_size) <= 0:
            raise ValueError(f"FaceTrack.frame_size must be (H, W), got {self.frame_size}.")
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        if np.isnan(self.landmarks[self.found]).any():
            raise ValueError("FaceTrack.landmarks hold NaN in frames marked as found.")
        self.landmarks[~self.found] = np.nan
        if self.raw_landmarks is not None:
            self.raw_landmarks = np.asarray(self.raw_landmarks, dtype=np.float32)

    @property
    def num_frames(self) -> int:
        return int(self.found.shape[0])

    @property
    def any_found(self) -> bool:
        return bool(self.found.any())

    def require_face(self) -> None:
        """Raise the one clear error for a video in which no frame has a face."""
        if not self.any_found:
            raise ValueError(
                f"No face was found in any of the {self.num_frames} frames. Use footage where a face is "
                "visible and not too small (at least ~40 px across), or give your own mask."
            )

    def face_size(self) -> np.ndarray:
        """Per-frame face size in pixels ``[T]`` (NaN without a face), see :func:`face_size`."""
        return face_size(self.landmarks)

    def fill_short_gaps(self, max_gap: int = 2) -> FaceTrack:
        """A copy where runs of at most ``max_gap`` frames without a face, between two frames with one,
        get landmarks interpolated linearly and ``found=True`` (a detector that blinks for a frame would
        otherwise make the edit blink). Longer gaps and gaps at the ends stay untouched."""
        landmarks, found = self.landmarks.copy(), self.found.copy()
        edges = np.flatnonzero(np.diff(np.concatenate([[1], self.found.astype(np.int8), [1]])))
        for start, stop in zip(edges[0::2], edges[1::2]):  # [start, stop) without a face
            if start == 0 or stop == self.num_frames or stop - start > max_gap:
                continue
            before, after = self.landmarks[start - 1], self.landmarks[stop]
            for t in range(start, stop):
                w = (t - start + 1) / (stop - start + 1)
                landmarks[t] = (1 - w) * before + w * after
            found[start:stop] = True
        return FaceTrack(landmarks, found, self.frame_size, self.raw_landmarks)

    def select(self, frame_indices: Sequence[int]) -> FaceTrack:
        """The track re-indexed by frame (e.g. a looped or ping-ponged video from ``fit_audio_video``)."""
        index = np.asarray(frame_indices, dtype=np.int64)
        raw = None if self.raw_landmarks is None else self.raw_landmarks[index]
        return FaceTrack(self.landmarks[index], self.found[index], self.frame_size, raw)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {"landmarks": self.landmarks, "found": self.found, "frame_size": np.asarray(self.frame_size)}
        if self.raw_landmarks is not None:
            arrays["raw_landmarks"] = self.raw_landmarks
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaceTrack:
        with np.load(path, allow_pickle=False) as data:
            raw = data["raw_landmarks"] if "raw_landmarks" in data else None
            return cls(data["landmarks"], data["found"], tuple(data["frame_size"].tolist()), raw)
