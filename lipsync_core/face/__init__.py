"""Face preprocessing: mediapipe landmarks with tracking, the adaptive mask, align/crop/paste-back."""

from .landmarks import (
    SELECT_MODES,
    TASK_FILE_NAME,
    FaceMeshBackend,
    LandmarkBackend,
    TasksFaceLandmarkerBackend,
    choose_backend,
    create_backend,
    detect_landmarks,
    track_faces,
)
from .smoothing import OneEuroSettings, one_euro, smooth_track_points
from .track import NUM_LANDMARKS, FaceTrack
