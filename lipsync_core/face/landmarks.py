"""Face landmarks with mediapipe, behind one interface with two backends, and a tracker for video.

Backends (chosen automatically, see :func:`choose_backend`):
- ``facemesh``: mediapipe's legacy ``solutions.face_mesh`` with its bundled models (mediapipe <= 0.10.21);
  faces are found with the bundled full-range face detector.
- ``tasks``: the Tasks API ``FaceLandmarker`` (current mediapipe), which needs a ``face_landmarker.task``
  model file from a model folder.

Tracking (ours): the landmark model runs on a square crop that follows the face (from the previous
frame's landmarks), resampled to a fixed size. That keeps its cost independent of the frame size and
lets small faces in large frames be found: the full frame is only searched when the face is lost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..configs import FACE_SELECT_MODES
from .smoothing import DEFAULT_SMOOTHING, OneEuroSettings, smooth_track_points
from .track import NUM_LANDMARKS, FaceTrack

TASK_FILE_NAME = "face_landmarker.task"
SELECT_MODES = FACE_SELECT_MODES

MESH_INPUT_SIZE = 256  # side of the crop handed to the landmark model (its own input is 192-256)
CROP_SCALE = 2.0  # crop side / face box side: room for motion between frames
FIND_MAX_SIDE = 640  # frames are searched for faces at this size (and in tiles for small faces)
TILE_SEARCH_EVERY = 5  # frames between tiled searches while no face is found

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


TASK_FILE_URL = (  # Google's MediaPipe Face Landmarker model (the "Face landmark detection" guide, Models)
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/face_landmarker.task"
)


def task_file_help(folders: Sequence[Path]) -> str:
    where = ", ".join(str(f) for f in folders) or "your model folder (ComfyUI: models/mediapipe)"
    return (
        f"mediapipe's face landmark model was not found. This mediapipe version has only the Tasks API, "
        f"which needs the file '{TASK_FILE_NAME}' (Google's MediaPipe Face Landmarker model, about 3.6 MB): "
        f"download {TASK_FILE_URL} and put it in: {where}. Alternatively install mediapipe==0.10.21, whose "
        "legacy face mesh has its models built in (the pack's tools/install_offline_mediapipe.sh)."
    )


def legacy_face_mesh_available() -> bool:
    try:
        from mediapipe.python.solutions import face_detection, face_mesh  # noqa: F401
    except ImportError:
        return False
    return True


def find_task_file(folders: Sequence[str | Path]) -> Path | None:
    for folder in folders:
        folder = Path(folder)
        candidate = folder if folder.is_file() else folder / TASK_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def choose_backend(
    preference: str = "auto",
    legacy_available: bool = True,
    task_file: Path | None = None,
    model_folders: Sequence[Path] = (),
) -> str:
    """Pick ``"facemesh"`` or ``"tasks"``.

    ``auto`` prefers the legacy face mesh (models built in, works offline); otherwise the Tasks
    FaceLandmarker with a ``face_landmarker.task`` file. Raises ValueError saying what to do when
    neither can run.
    """
    if preference not in ("auto", "facemesh", "tasks"):
        raise ValueError(f"Unknown landmark backend {preference!r}; choose auto, facemesh or tasks.")
    if preference in ("auto", "facemesh") and legacy_available:
        return "facemesh"
    if preference == "facemesh":
        raise ValueError(
            "The legacy mediapipe face mesh is not available in this mediapipe version (it was removed "
            "after 0.10.21). Choose the 'tasks' backend with a face_landmarker.task file, or install "
            "mediapipe==0.10.21."
        )
    if task_file is None:
        raise ValueError(task_file_help(model_folders))
    return "tasks"


class LandmarkBackend(ABC):
    """What the tracker needs from a landmark model."""

    name: str

    @abstractmethod
    def find_faces(self, image: np.ndarray) -> list[Box]:
        """Boxes of all faces in an RGB uint8 image (any size)."""

    @abstractmethod
    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """``[478, 2]`` pixel landmarks of the face in an RGB uint8 crop (tracking mode), or None."""

    def close(self) -> None:  # noqa: B027 - optional: backends holding native resources override it
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _normalized_to_pixels(points: Iterable, width: int, height: int) -> np.ndarray:
    xy = np.array([(p.x, p.y) for p in points], dtype=np.float32)[:NUM_LANDMARKS]
    # mediapipe measures from the image edge; the cv2 convention (pixel centres at integers) is -0.5.
    return xy * np.array([width, height], dtype=np.float32) - 0.5


class FaceMeshBackend(LandmarkBackend):
    """mediapipe's legacy face mesh (478 points with refined lips/eyes/irises) and full-range detector."""

    name = "facemesh"

    def __init__(self, min_confidence: float = 0.5):
        from mediapipe.python.solutions import face_detection, face_mesh

        self._mesh = face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    def find_faces(self, image: np.ndarray) -> list[Box]:
        result = self._detector.process(np.ascontiguousarray(image))
        boxes = []
        height, width = image.shape[:2]
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            boxes.append(
                (box.xmin * width, box.ymin * height, (box.xmin + box.width) * width, (box.ymin + box.height) * height)
            )
        return boxes

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        return _normalized_to_pixels(result.multi_face_landmarks[0].landmark, image.shape[1], image.shape[0])

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()


class TasksFaceLandmarkerBackend(LandmarkBackend):
    """mediapipe Tasks ``FaceLandmarker`` from a ``face_landmarker.task`` file (video mode for tracking)."""

    name = "tasks"

    def __init__(self, task_file: str | Path, min_confidence: float = 0.5, max_faces: int = 4):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        task_file = Path(task_file)
        if not task_file.is_file():
            raise ValueError(task_file_help([task_file.parent]))

        def create(mode, num_faces: int):
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(task_file)),
                running_mode=mode,
                num_faces=num_faces,
                min_face_detection_confidence=min_confidence,
                min_face_presence_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
            return vision.FaceLandmarker.create_from_options(options)

        try:
            self._tracker = create(vision.RunningMode.VIDEO, 1)
            self._finder = create(vision.RunningMode.IMAGE, max_faces)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"{task_file} could not be loaded as a MediaPipe Face Landmarker model ({error}). "
                f"Replace it with the original '{TASK_FILE_NAME}'."
            ) from error
        self._timestamp_ms = 0

    def _image(self, image: np.ndarray):
        return self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))

    def find_faces(self, image: np.ndarray) -> list[Box]:
        result = self._finder.detect(self._image(image))
        boxes = []
        for face in result.face_landmarks:
            xy = _normalized_to_pixels(face, image.shape[1], image.shape[0])
            boxes.append((*xy.min(axis=0), *xy.max(axis=0)))
        return boxes

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        self._timestamp_ms += 40  # video mode needs increasing timestamps; the value itself is unused
        result = self._tracker.detect_for_video(self._image(image), self._timestamp_ms)
        if not result.face_landmarks:
            return None
        return _normalized_to_pixels(result.face_landmarks[0], image.shape[1], image.shape[0])

    def close(self) -> None:
        self._tracker.close()
        self._finder.close()


def create_backend(
    preference: str = "auto",
    model_folders: Sequence[str | Path] = (),
    min_confidence: float = 0.5,
) -> LandmarkBackend:
    """Create the landmark backend :func:`choose_backend` picks for this mediapipe and these folders."""
    folders = [Path(f) for f in model_folders]
    task_file = find_task_file(folders)
    name = choose_backend(preference, legacy_face_mesh_available(), task_file, folders)
    if name == "facemesh":
        return FaceMeshBackend(min_confidence)
    return TasksFaceLandmarkerBackend(task_file, min_confidence)


# --------------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------------


def _box_of(points: np.ndarray) -> Box:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _centre(box: Box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _side(box: Box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _find_faces(backend: LandmarkBackend, frame: np.ndarray, tiles: bool = True) -> list[Box]:
    """All faces in a frame: the whole frame at FIND_MAX_SIDE, then (if ``tiles``) overlapping tiles for
    small faces."""
    height, width = frame.shape[:2]
    scale = min(1.0, FIND_MAX_SIDE / max(height, width))
    small = (
        cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        if scale < 1
        else frame
    )
    boxes = [tuple(v / scale for v in box) for box in backend.find_faces(small)]
    if boxes or not tiles or max(height, width) <= FIND_MAX_SIDE:
        return boxes
    # Tiles of half the frame's shorter side, overlapping by half: a face of ~1/10 of the frame
    # becomes ~1/4 of a tile, which the detector sees well.
    tile = min(height, width) // 2
    step = tile // 2
    for y in range(0, max(height - tile, 0) + step, step):
        for x in range(0, max(width - tile, 0) + step, step):
            y0, x0 = min(y, height - tile), min(x, width - tile)
            piece = frame[y0 : y0 + tile, x0 : x0 + tile]
            s = min(1.0, FIND_MAX_SIDE / tile)
            if s < 1:
                piece = cv2.resize(piece, (round(tile * s), round(tile * s)), interpolation=cv2.INTER_AREA)
            for b in backend.find_faces(piece):
                box = (b[0] / s + x0, b[1] / s + y0, b[2] / s + x0, b[3] / s + y0)
                if all(_iou(box, other) < 0.3 for other in boxes):
                    boxes.append(box)
    return boxes


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _choose(
    boxes: list[Box], select: str, face_index: int, last_centre: np.ndarray | None, last_side: float
) -> Box | None:
    """The face to follow: the one nearest to where the followed face was last seen (if close), else by rule."""
    if not boxes:
        return None
    if last_centre is not None:
        distances = [np.linalg.norm(_centre(b) - last_centre) for b in boxes]
        nearest = int(np.argmin(distances))
        if distances[nearest] < 0.75 * last_side:
            return boxes[nearest]
    if select == "largest":
        return max(boxes, key=_side)
    ordered = sorted(boxes, key=lambda b: _centre(b)[0])  # left to right
    return ordered[face_index] if face_index < len(ordered) else None


def _crop_transform(centre: np.ndarray, side: float) -> np.ndarray:
    """Affine frame -> mesh crop (MESH_INPUT_SIZE square) around ``centre`` with ``side`` pixels."""
    scale = MESH_INPUT_SIZE / side
    return np.array(
        [[scale, 0, MESH_INPUT_SIZE / 2 - 0.5 - scale * centre[0]],
         [0, scale, MESH_INPUT_SIZE / 2 - 0.5 - scale * centre[1]]],
        dtype=np.float64,
    )


def _landmarks_in_box(
    backend: LandmarkBackend, frame: np.ndarray, centre: np.ndarray, side: float
) -> np.ndarray | None:
    matrix = _crop_transform(centre, side)
    crop = cv2.warpAffine(
        frame, matrix, (MESH_INPUT_SIZE, MESH_INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    points = backend.landmarks(crop)
    if points is None:
        return None
    scale = matrix[0, 0]
    return ((points - matrix[:, 2]) / scale).astype(np.float32)


def _follow(crop: tuple[np.ndarray, float] | None, centre: np.ndarray, side: float) -> tuple[np.ndarray, float]:
    """The crop for the next frame. It stays put while the face stays well inside it: moving it after
    every small change of the landmarks feeds their noise back into the model's input, which then
    oscillates from frame to frame on a still face."""
    if crop is None:
        return centre, side
    old_centre, old_side = crop
    if np.linalg.norm(centre - old_centre) > 0.06 * old_side or abs(np.log(side / old_side)) > 0.08:
        return centre, side
    return crop


def _as_uint8_frame(frame) -> np.ndarray:
    if hasattr(frame, "detach"):  # torch tensor, ComfyUI IMAGE layout (float 0..1)
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"Frames must be RGB [H, W, 3], got shape {frame.shape}.")
    return frame


def track_faces(
    frames: Iterable,
    fps: float = 25.0,
    select: str = "largest",
    face_index: int = 0,
    backend: str | LandmarkBackend = "auto",
    model_folders: Sequence[str | Path] = (),
    smoothing: OneEuroSettings | None = DEFAULT_SMOOTHING,
    progress=None,
) -> FaceTrack:
    """Follow one face through ``frames`` (uint8 RGB ``[H, W, 3]`` arrays or float 0..1, any iterable).

    ``select``: ``"largest"`` face or by ``face_index`` counted left to right, chosen when the face is
    first seen and then followed (the same person stays chosen while faces move). Frames without the
    face get ``found=False`` and NaN landmarks; nothing raises for them. ``smoothing=None`` keeps the raw
    landmarks. ``progress(done)`` is called per frame.
    """
    if select not in SELECT_MODES:
        raise ValueError(f"Unknown face selection {select!r}; choose one of {', '.join(SELECT_MODES)}.")
    if face_index < 0:
        raise ValueError(f"face_index must be >= 0, got {face_index}.")
    own_backend = not isinstance(backend, LandmarkBackend)
    landmark_backend = create_backend(backend, model_folders) if own_backend else backend
    points: list[np.ndarray] = []
    found: list[bool] = []
    frame_size = None
    crop: tuple[np.ndarray, float] | None = None  # (centre, side) of the crop that follows the face
    last_centre, last_side = None, 0.0
    last_tile_search = -TILE_SEARCH_EVERY
    try:
        for index, frame in enumerate(frames):
            frame = _as_uint8_frame(frame)
            if frame_size is None:
                frame_size = frame.shape[:2]
            elif frame.shape[:2] != frame_size:
                raise ValueError(
                    f"Frame {index} is {frame.shape[:2]} but the first frame is {frame_size}; "
                    "all frames must share one size."
                )
            current = None
            if crop is not None:
                current = _landmarks_in_box(landmark_backend, frame, *crop)
                # A jump of more than half a face between frames is a lost track, not motion.
                if current is not None and np.linalg.norm(_centre(_box_of(current)) - last_centre) > 0.5 * last_side:
                    current = None
            if current is None:
                # Tiles cost ~20 detector runs at 1080p: during long stretches without a face, only
                # every few frames.
                tiles = index - last_tile_search >= TILE_SEARCH_EVERY
                last_tile_search = index if tiles else last_tile_search
                chosen = _choose(
                    _find_faces(landmark_backend, frame, tiles), select, face_index, last_centre, last_side
                )
                if chosen is not None:
                    current = _landmarks_in_box(
                        landmark_backend, frame, _centre(chosen), CROP_SCALE * 1.2 * _side(chosen)
                    )
                    crop = None
            if current is not None:
                box = _box_of(current)
                last_centre, last_side = _centre(box), _side(box)
                crop = _follow(crop, last_centre, CROP_SCALE * last_side)
                points.append(current)
            else:
                crop = None
                points.append(np.full((NUM_LANDMARKS, 2), np.nan, np.float32))
            found.append(current is not None)
            if progress is not None:
                progress(index + 1)
    finally:
        if own_backend:
            landmark_backend.close()
    if frame_size is None:
        raise ValueError("No frames were given to the face tracker.")
    raw = np.stack(points)
    found_array = np.asarray(found)
    track = FaceTrack(raw.copy(), found_array, frame_size, raw_landmarks=raw)
    if smoothing is not None and found_array.any():
        scale = float(np.nanmedian(track.face_size()))
        track.landmarks = smooth_track_points(raw, found_array, fps, scale, smoothing)
        track.landmarks[~found_array] = np.nan
    return track


def detect_landmarks(
    image, backend: str | LandmarkBackend = "auto", model_folders: Sequence[str | Path] = ()
) -> np.ndarray | None:
    """Landmarks ``[478, 2]`` of the largest face in one image, or None."""
    track = track_faces([image], backend=backend, model_folders=model_folders, smoothing=None)
    return track.landmarks[0] if track.found[0] else None
