"""Real mediapipe on the real astronaut portrait: landmarks, tracking, mask, align and paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lipsync_core.face import (
    FaceTrack,
    TasksFaceLandmarkerBackend,
    align_transforms,
    choose_backend,
    create_backend,
    crop_track,
    face_masks,
    paste_back,
    track_faces,
    transform_points,
    warp_to_crop,
)
from lipsync_core.face.track import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, LIPS_INNER, LIPS_OUTER

CANVAS = (360, 640)  # H, W: a landscape video frame
BACKGROUND = 110


def _similarity(angle_deg: float, scale: float, tx: float, ty: float, centre=(256, 256)) -> np.ndarray:
    """Astronaut -> canvas: rotate/scale about the face region, then move."""
    matrix = cv2.getRotationMatrix2D(centre, angle_deg, scale)
    matrix[:, 2] += (tx, ty)
    return matrix


def _place(image: np.ndarray, matrix: np.ndarray, canvas=CANVAS) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (canvas[1], canvas[0]), flags=cv2.INTER_LINEAR, borderValue=(BACKGROUND,) * 3)


@pytest.fixture(scope="module")
def static_landmarks(astronaut):
    track = track_faces([astronaut], smoothing=None)
    assert track.found.all()
    return track.landmarks[0]


@pytest.fixture(scope="module")
def moving_sequence(astronaut):
    """24 frames: the portrait moving, rotating and zooming; three frames show no face, and frame 16 shows a
    second, larger face beside the followed one."""
    rng = np.random.default_rng(0)
    matrices, frames = [], []
    for t in range(24):
        phase = t / 23
        matrix = _similarity(
            angle_deg=12 * np.sin(2 * np.pi * phase), scale=0.55 + 0.25 * phase,
            tx=60 + 160 * phase, ty=-60 + 20 * np.cos(2 * np.pi * phase),
        )
        if t in (9, 10, 11):
            # no face: the lower right of the portrait (helmet and suit) fills the frame
            frame = cv2.resize(astronaut[300:, 200:], (CANVAS[1], CANVAS[0]))
        else:
            frame = _place(astronaut, matrix)
        if t == 16:  # someone else steps in on the left, larger than the followed face (which is right)
            frame[90:270, 10:190] = cv2.resize(astronaut[40:240, 120:320], (180, 180))
        noise = rng.normal(0, 2.0, frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
        matrices.append(matrix)
    return np.stack(frames), np.stack(matrices)


@pytest.fixture(scope="module")
def moving_track(moving_sequence):
    frames, _ = moving_sequence
    return track_faces(frames, fps=25)


def test_static_landmarks_are_anatomical(static_landmarks):
    lm = static_landmarks
    assert lm.shape == (478, 2) and np.isfinite(lm).all()
    # the face in skimage's astronaut is around x 160-290, y 50-220
    assert 150 < lm[:, 0].min() and lm[:, 0].max() < 300 and 40 < lm[:, 1].min() and lm[:, 1].max() < 230
    assert lm[1, 1] < lm[13, 1] < lm[14, 1] < lm[152, 1]  # nose tip, upper lip, lower lip, chin
    assert lm[list(EYE_IMAGE_LEFT), 0].mean() < lm[1, 0] < lm[list(EYE_IMAGE_RIGHT), 0].mean()


def test_moving_sequence_landmarks_follow_the_motion(moving_sequence, moving_track, static_landmarks):
    frames, matrices = moving_sequence
    track = moving_track
    no_face = [9, 10, 11]
    assert not track.found[no_face].any() and np.isnan(track.landmarks[no_face]).all()
    assert track.found[[t for t in range(24) if t not in no_face]].all()
    for t in np.flatnonzero(track.found):
        inverse = cv2.invertAffineTransform(matrices[t])
        back = track.raw_landmarks[t] @ inverse[:, :2].T + inverse[:, 2]  # into the portrait's pixels
        error = np.linalg.norm(back - static_landmarks, axis=1)
        assert np.median(error) < 3.0 and np.percentile(error, 95) < 6.0, (t, np.median(error))
        # the smoothed landmarks stay close to the raw ones (smoothing must not lag behind fast motion)
        size = track.face_size()[t]
        assert np.median(np.linalg.norm(track.landmarks[t] - track.raw_landmarks[t], axis=1)) < 0.03 * size


def test_mask_covers_lips_and_stops_below_the_eyes(moving_track):
    track = moving_track
    lips = list(LIPS_OUTER + LIPS_INNER)
    eyes = list(EYE_IMAGE_LEFT + EYE_IMAGE_RIGHT)
    for edge in ("mouth", "nose", "eyes"):
        masks = face_masks(track, upper_edge=edge)
        assert masks.shape == (24, *CANVAS) and masks.dtype == np.float32
        assert not masks[[9, 10, 11]].any()  # no face, no edit
        for t in np.flatnonzero(track.found):
            xy = np.round(track.landmarks[t]).astype(int)
            values = masks[t, xy[:, 1].clip(0, CANVAS[0] - 1), xy[:, 0].clip(0, CANVAS[1] - 1)]
            assert values[lips].min() > 0.99, (edge, t)
            if edge in ("mouth", "nose"):
                assert values[eyes].max() < 0.02, (edge, t)  # at most the feather's faint tail
                assert values[list(range(468, 478)) + [159, 386]].max() == 0.0  # irises, upper lids
            if edge == "mouth":
                assert values[[168, 6]].max() == 0.0  # the nose bridge is outside too
    # a higher edge regenerates more of the face
    areas = [face_masks(track, upper_edge=e)[0].sum() for e in ("mouth", "nose", "eyes")]
    assert areas[0] < areas[1] < areas[2]


def test_user_mask_replaces_limits_or_extends(moving_track):
    track = moving_track
    auto = face_masks(track)
    user = np.zeros(CANVAS, np.float32)
    user[:, : CANVAS[1] // 2] = 1.0  # the left half of the frame
    np.testing.assert_array_equal(face_masks(track, user_mask=user, mode="replace"), np.broadcast_to(user, auto.shape))
    np.testing.assert_array_equal(face_masks(track, user_mask=user, mode="intersect"), auto * user)
    np.testing.assert_array_equal(face_masks(track, user_mask=user, mode="union"), np.maximum(auto, user))
    with pytest.raises(ValueError, match="needs a user mask"):
        face_masks(track, mode="union")
    with pytest.raises(ValueError, match="one mask per frame"):
        face_masks(track, user_mask=np.ones((5, 10, 10)), mode="union")


def test_crops_do_not_jitter_on_a_still_video(astronaut):
    rng = np.random.default_rng(1)
    still = _place(astronaut, _similarity(0, 1.0, 90, -60))
    frames = np.stack([np.clip(still + rng.normal(0, 3.0, still.shape), 0, 255).astype(np.uint8) for _ in range(20)])
    track = track_faces(frames, fps=25)
    assert track.found.all()
    face = np.repeat(track.landmarks[:1], len(frames), axis=0)  # fixed points on the (still) face

    def crop_jitter(transforms: np.ndarray) -> float:
        """Largest move of a still face point between consecutive crops, in pixels of the 512 crop."""
        in_crop = transform_points(face, transforms)
        return float(np.linalg.norm(np.diff(in_crop, axis=0), axis=-1).max())

    transforms = align_transforms(track, size=512)
    smooth = crop_jitter(transforms)
    assert smooth < 1.0, smooth  # (the face is magnified 5x into the crop)
    # the mask in the crop is as steady: under 3 % of its area changes between frames
    masks = face_masks(crop_track(track, transforms, 512))
    change = np.abs(np.diff(masks, axis=0)).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))[1:]
    assert change.max() < 0.03, change.max()
    # crops from the detector's raw output jitter more: the smoothing is doing the work
    raw = FaceTrack(track.raw_landmarks, track.found, track.frame_size)
    assert crop_jitter(align_transforms(raw, size=512)) > 1.5 * smooth


def test_align_crop_and_paste_back(moving_sequence, moving_track):
    frames, _ = moving_sequence
    track = moving_track
    transforms = align_transforms(track, size=256)
    assert transforms.shape == (24, 2, 3) and transforms.dtype == np.float32 and np.isfinite(transforms).all()
    crops = warp_to_crop(frames, transforms, 256)
    assert crops.shape == (24, 256, 256, 3) and crops.dtype == np.uint8
    # the face lands at the same place in every crop: nose tip and chin within 4 % of the crop, although
    # the head turns by up to 3 degrees and moves 7 pixels from one frame to the next
    in_crop = transform_points(track.landmarks, transforms)[track.found]
    assert np.ptp(in_crop[:, [1, 152]], axis=0).max() < 0.04 * 256
    crop_masks = face_masks(crop_track(track, transforms, 256))
    edited = 255 - crops  # an unmistakable "generated" image
    out = paste_back(frames, edited, crop_masks, transforms, track.found)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    no_face = ~track.found
    np.testing.assert_array_equal(out[no_face], frames[no_face])  # untouched, bit for bit
    changed = np.any(out != frames, axis=-1)
    frame_masks = face_masks(track)
    outside = np.stack([~_near_mask(m) for m in frame_masks])
    for t in np.flatnonzero(track.found):
        # outside the mask nothing changed; in the mask's core the edit shows
        assert not changed[t][outside[t]].any()
        assert changed[t][frame_masks[t] > 0.99].mean() > 0.95
    # the same in ComfyUI's float layout (torch [T, H, W, 3] in 0..1)
    as_float = torch.from_numpy(frames.astype(np.float32) / 255)
    out_float = paste_back(as_float, edited, crop_masks, transforms, track.found)
    assert isinstance(out_float, torch.Tensor) and out_float.dtype == torch.float32
    assert torch.equal(out_float[torch.from_numpy(no_face)], as_float[torch.from_numpy(no_face)])
    outside_t = torch.from_numpy(outside)
    assert torch.equal(out_float[outside_t], as_float[outside_t])
    in_place = frames.copy()
    assert paste_back(in_place, edited, crop_masks, transforms, track.found, inplace=True) is in_place
    np.testing.assert_array_equal(in_place, out)
    assert (
        out_float[torch.from_numpy(frame_masks > 0.99)] != as_float[torch.from_numpy(frame_masks > 0.99)]
    ).float().mean() > 0.9


def _near_mask(mask: np.ndarray) -> np.ndarray:
    """The frame-space mask's support grown by 2 px: the crop-space mask, warped back, may differ from
    the mask drawn in the frame by resampling at its very rim."""
    return cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def test_faces_near_the_border_and_any_aspect(astronaut):
    for canvas, matrix in (
        ((400, 300), _similarity(0, 0.9, -130, 80)),  # portrait frame, face close to the left edge
        ((240, 900), _similarity(8, 0.7, 620, -60)),  # wide frame, face near the right and top edges
    ):
        frame = _place(astronaut, matrix, canvas)
        track = track_faces([frame])
        assert track.found.all(), canvas
        transforms = align_transforms(track, 512)
        crops = warp_to_crop([frame], transforms, 512)
        masks = face_masks(crop_track(track, transforms, 512))
        out = paste_back(frame[None], 255 - crops, masks, transforms)
        assert out.shape == (1, *canvas, 3)
        frame_mask = face_masks(track)[0]
        changed = np.any(out[0] != frame, axis=-1)
        assert not changed[~_near_mask(frame_mask)].any() and changed[frame_mask > 0.99].mean() > 0.95


def test_two_faces_choose_and_keep_the_chosen_one(astronaut):
    portrait = astronaut[20:300, 100:380]
    frames = []
    for t in range(8):
        # the left face shrinks and the right one grows: they swap sizes half way
        left = cv2.resize(portrait, None, fx=1.0 - 0.04 * t, fy=1.0 - 0.04 * t)
        right = cv2.resize(portrait, None, fx=0.72 + 0.04 * t, fy=0.72 + 0.04 * t)
        frame = np.full((300, 640, 3), BACKGROUND, np.uint8)
        frame[: left.shape[0], 10 : 10 + left.shape[1]] = left
        frame[: right.shape[0], 630 - right.shape[1] : 630] = right
        frames.append(frame)
    largest = track_faces(frames, select="largest")
    right = track_faces(frames, select="index", face_index=1)
    assert largest.found.all() and right.found.all()
    assert (largest.landmarks[:, 1, 0] < 320).all()  # began with the larger left face and kept it
    assert (right.landmarks[:, 1, 0] > 320).all()
    missing = track_faces(frames[:2], select="index", face_index=5)
    assert not missing.found.any()


def test_no_face_anywhere_is_one_clear_error(astronaut):
    frames = np.stack([cv2.resize(astronaut[300:, 200:], (320, 240))] * 3)
    track = track_faces(frames)  # no exception while tracking
    assert not track.found.any()
    with pytest.raises(ValueError, match="No face was found in any of the 3 frames"):
        align_transforms(track)
    assert not face_masks(track).any()


def test_synthetic_landmarks_drive_mask_and_alignment(static_landmarks):
    # e.g. the toy world: landmarks drawn by a program, no detector involved
    frames = 6
    shifted = np.stack([static_landmarks * 0.5 + [10 + 4 * t, 20] for t in range(frames)])
    found = np.array([True, True, False, True, True, True])
    shifted[~found] = np.nan
    track = FaceTrack(shifted, found, (256, 256))
    masks = face_masks(track, upper_edge="nose")
    assert masks[found].max() > 0.999 and not masks[~found].any()
    transforms = align_transforms(track, 128)
    assert np.isfinite(transforms).all()
    crop_masks = face_masks(crop_track(track, transforms, 128))
    assert crop_masks[found].sum(axis=(1, 2)).std() < 0.02 * crop_masks[found].sum(axis=(1, 2)).mean()


def test_backend_choice_and_task_file_messages(tmp_path):
    assert choose_backend("auto", legacy_available=True) == "facemesh"
    task = tmp_path / "face_landmarker.task"
    assert choose_backend("auto", legacy_available=False, task_file=task) == "tasks"
    assert choose_backend("tasks", legacy_available=True, task_file=task) == "tasks"
    with pytest.raises(ValueError) as error:
        choose_backend("auto", legacy_available=False, task_file=None, model_folders=[tmp_path])
    assert str(tmp_path) in str(error.value) and "face_landmarker.task" in str(error.value)
    assert "Face Landmarker" in str(error.value)
    with pytest.raises(ValueError, match="legacy"):
        choose_backend("facemesh", legacy_available=False)
    with pytest.raises(ValueError, match="face_landmarker.task"):
        create_backend("tasks", model_folders=[tmp_path])  # the real lookup: nothing in the folder
    # a file that is not a model: the real Tasks API rejects it and we say what to do
    task.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not be loaded as a MediaPipe Face Landmarker"):
        TasksFaceLandmarkerBackend(task)
    backend = create_backend("auto", model_folders=[tmp_path])
    try:
        assert backend.name == "facemesh"  # mediapipe 0.10.21 here: the built-in models win
    finally:
        backend.close()


def test_track_save_load_and_reindex(moving_track, tmp_path):
    path = moving_track.save(tmp_path / "track.npz")
    loaded = FaceTrack.load(path)
    np.testing.assert_array_equal(loaded.landmarks, moving_track.landmarks)
    np.testing.assert_array_equal(loaded.found, moving_track.found)
    assert loaded.frame_size == CANVAS
    filled = moving_track.fill_short_gaps(max_gap=3)
    assert filled.found.all() and not moving_track.found[9:12].any()
    np.testing.assert_allclose(
        filled.landmarks[10], (moving_track.landmarks[8] + moving_track.landmarks[12]) / 2, atol=1e-4
    )
    assert not moving_track.fill_short_gaps(max_gap=2).found[9:12].any()  # a 3-frame gap is a real absence
    looped = moving_track.select([0, 1, 0, 1])
    np.testing.assert_array_equal(looped.landmarks[2], moving_track.landmarks[0])
    with pytest.raises(ValueError, match="478"):
        FaceTrack(np.zeros((2, 68, 2)), np.ones(2, bool), (10, 10))


def test_prepare_face_crops_end_to_end(moving_sequence):
    from lipsync_core.face import prepare_face_crops

    frames, _ = moving_sequence
    prepared = prepare_face_crops(torch.from_numpy(frames.astype(np.float32) / 255), fps=25, size=256)
    assert prepared.crops.shape == (24, 256, 256, 3) and prepared.masks.shape == (24, 256, 256)
    np.testing.assert_array_equal(prepared.editable, prepared.track.found)
    assert not prepared.masks[~prepared.editable].any()
    lips = transform_points(prepared.track.landmarks, prepared.transforms)[:, list(LIPS_OUTER)]
    for t in np.flatnonzero(prepared.editable):
        xy = np.round(lips[t]).astype(int)
        assert prepared.masks[t, xy[:, 1], xy[:, 0]].min() > 0.99
    out = paste_back(frames, 255 - prepared.crops, prepared.masks, prepared.transforms, prepared.editable)
    np.testing.assert_array_equal(out[~prepared.editable], frames[~prepared.editable])


def test_user_mask_edits_a_face_the_detector_cannot_see():
    # a drawn character: no mediapipe face, but the user paints where its mouth is
    character = np.full((240, 320, 3), 200, np.uint8)
    cv2.circle(character, (160, 120), 80, (90, 160, 60), -1)
    frames = np.stack([character] * 4)
    user = np.zeros((4, 240, 320), np.float32)
    for t in range(4):
        user[t, 150 + t : 190 + t, 120:200] = 1.0
    from lipsync_core.face import prepare_face_crops

    with pytest.raises(ValueError, match="No face was found"):
        prepare_face_crops(frames, size=128)
    prepared = prepare_face_crops(frames, size=128, user_mask=user, mask_mode="replace")
    assert prepared.editable.all() and not prepared.track.found.any()
    out = paste_back(frames, 255 - prepared.crops, prepared.masks, prepared.transforms, prepared.editable)
    changed = np.any(out != frames, axis=-1)
    for t in range(4):
        near = _near_mask(user[t])
        assert not changed[t][~near].any() and changed[t][user[t] > 0].mean() > 0.95
    with pytest.raises(ValueError, match="frames are"):
        prepare_face_crops(frames, user_mask=np.ones((10, 10)), mask_mode="replace")


def test_small_face_in_a_1080p_frame(astronaut, static_landmarks):
    # mediapipe's own detector misses a face this small in a full 1080p view; the tracker finds it in
    # tiles and follows it in a crop
    frame = np.full((1080, 1920, 3), BACKGROUND, np.uint8)
    frame[600:856, 1500:1756] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    track = track_faces([frame] * 3, smoothing=None)
    assert track.found.all()
    expected = (static_landmarks + 0.5) * 0.5 - 0.5 + [1500, 600]
    assert np.median(np.linalg.norm(track.landmarks[2] - expected, axis=1)) < 1.5


def test_held_mask_does_not_follow_the_source_jaw(static_landmarks, astronaut):
    # a talking face drawn from landmarks: the jaw and lower lip drop and rise at 4 Hz
    from lipsync_core.face import prepare_face_crops
    from lipsync_core.face.track import LOWER_JAW

    frames = 50
    lower = np.array(sorted(set(LOWER_JAW[2:-2]) | {14, 17, 84, 314, 87, 317, 178, 402}))
    talking = np.repeat(static_landmarks[None], frames, axis=0)
    opening = 12.0 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(frames) / 25))
    talking[:, lower, 1] += opening[:, None]
    track = FaceTrack(talking, np.ones(frames, bool), (512, 512))
    video = np.repeat(astronaut[None], frames, axis=0)
    moving = prepare_face_crops(video, fps=25, size=256, track=track, mask_hold=0.0).masks
    held = prepare_face_crops(video, fps=25, size=256, track=track, mask_hold=0.5).masks
    area_moving, area_held = moving.sum(axis=(1, 2)), held.sum(axis=(1, 2))
    assert np.ptp(area_moving) > 0.05 * area_moving.mean()  # the plain mask opens with the jaw
    steady = slice(13, frames - 13)  # a full hold window on both sides
    assert np.ptp(area_held[steady]) < 0.002 * area_held.mean()  # the held one does not
    assert (held >= moving - 0.02).all()  # and covers the plain one (up to resampling of the outline)


def test_crop_does_not_move_with_the_source_mouth(static_landmarks):
    # mouth corners widen and the lips part at 4 Hz while the head holds still: a crop fitted on the
    # mouth would follow them and show the model the source mouth everywhere (eyes, background)
    from lipsync_core.face import align_transforms
    from lipsync_core.face.track import LOWER_JAW, MOUTH_CORNERS

    frames = 20
    talking = np.repeat(static_landmarks[None], frames, axis=0)
    swing = 10.0 * np.sin(2 * np.pi * 4 * np.arange(frames) / 25)
    talking[:, MOUTH_CORNERS[0], 0] -= swing
    talking[:, MOUTH_CORNERS[1], 0] += swing
    talking[:, list(LOWER_JAW), 1] += np.abs(swing)[:, None]
    transforms = align_transforms(FaceTrack(talking, np.ones(frames, bool), (512, 512)), size=256)
    assert np.abs(transforms - transforms[0]).max() < 1e-4
