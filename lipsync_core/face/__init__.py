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
from .align import (
    DEFAULT_CROP_SIZE,
    align_transforms,
    crop_template,
    crop_track,
    five_points,
    paste_back,
    similarity_transform,
    transform_points,
    warp_to_crop,
)
from .mask import MASK_MODES, UPPER_EDGES, combine_masks, face_masks, frame_mask, mask_polygon, render_polygon_mask
from .prepare import FaceCrops, mask_box_transforms, prepare_face_crops
