"""MOUTH_MOTION: real mediapipe on a real face whose jaw is made to drop, edits, resampling, the preview."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipsync_core.face import track_faces
from lipsync_core.metrics import pearson
from lipsync_core.motion import (
    MOUTH_POINTS,
    MouthMotion,
    edit_motion,
    estimate_rest,
    motion_from_track,
    mouth_motion_from_video,
    mouth_width,
    plot_motion,
    retarget,
)
from tools.demo_assets import drop_jaw

FPS = 25
DROP = 10 * (1 - np.cos(np.linspace(0, 4 * np.pi, 24))) / 2  # jaw drop in portrait pixels, two open-close cycles


@pytest.fixture(scope="module")
def portrait_landmarks(astronaut):
    track = track_faces([astronaut], smoothing=None)
    assert track.found.all()
    return track.landmarks[0]


@pytest.fixture(scope="module")
def talking_frames(astronaut, portrait_landmarks):
    return np.stack([drop_jaw(astronaut, portrait_landmarks, d) for d in DROP])


@pytest.fixture(scope="module")
def talking_motion(talking_frames):
    return motion_from_track(track_faces(talking_frames, fps=FPS), FPS)


def test_real_face_motion_follows_the_jaw(talking_motion):
    assert talking_motion.points.shape == (len(DROP), len(MOUTH_POINTS), 2)
    assert pearson(talking_motion.opening(), DROP) > 0.85
    # crop units: the mouth is about a fifth of the crop wide, the gap grows with the drop
    assert 0.1 < float(np.median(talking_motion.width())) < 0.35
    assert talking_motion.opening()[np.argmax(DROP)] > talking_motion.opening()[0] + 0.01


def test_motion_is_measured_in_the_aligned_crop(talking_frames, talking_motion):
    """The same talking face moving, rotating and zooming in a larger frame gives the same motion."""
    placed = []
    for t, frame in enumerate(talking_frames):
        matrix = cv2.getRotationMatrix2D((256, 256), 10 * np.sin(t / 4), 0.6 + 0.3 * t / len(talking_frames))
        matrix[:, 2] += (80 + 4 * t, -40)
        placed.append(cv2.warpAffine(frame, matrix, (640, 400), borderValue=(110, 110, 110)))
    moving = motion_from_track(track_faces(np.stack(placed), fps=FPS), FPS)
    assert pearson(moving.opening(), DROP) > 0.85
    amplitude = np.ptp(moving.opening()) / np.ptp(talking_motion.opening())
    assert 0.75 < amplitude < 1.33
    assert np.abs(np.median(moving.width()) / np.median(talking_motion.width()) - 1) < 0.1


def test_retarget_takes_the_target_mouth_size_and_rest_shape(talking_motion):
    rest = talking_motion.rest
    centre = rest.mean(axis=0)
    target_rest = centre + (rest - centre) * 1.3 + np.array([0.01, 0.02], np.float32)
    moved = retarget(talking_motion, target_rest)
    np.testing.assert_allclose(moved.rest, target_rest)
    ratio = np.ptp(moved.opening()) / np.ptp(talking_motion.opening())
    assert ratio == pytest.approx(1.3, rel=1e-3)
    # the least open frame is the target's closed mouth
    np.testing.assert_allclose(estimate_rest(moved.points), target_rest, atol=1e-4)


def test_motion_from_video_retargets_to_a_target_track(astronaut, talking_frames):
    target = track_faces([cv2.resize(astronaut, (384, 384))], smoothing=None)
    driving = track_faces(talking_frames, fps=FPS)
    motion = mouth_motion_from_video(driving, FPS, target=target)
    np.testing.assert_allclose(motion.rest, motion_from_track(target, FPS).rest)
    assert pearson(motion.opening(), DROP) > 0.85


def _synthetic(num_frames: int = 100, fps: float = FPS, period: float = 0.8) -> MouthMotion:
    """A mouth opening and closing ``period`` seconds apart around a fixed rest shape."""
    rng = np.random.default_rng(0)
    rest = np.stack([np.linspace(0.4, 0.6, len(MOUTH_POINTS)), 0.7 + 0.01 * rng.standard_normal(len(MOUTH_POINTS))],
                    axis=1).astype(np.float32)
    lower = np.array([i in (14, 17, 84, 314, 87, 317, 178, 402) for i in MOUTH_POINTS])
    times = (np.arange(num_frames) + 0.5) / fps
    opening = 0.03 * (1 - np.cos(2 * np.pi * times / period)) / 2 + 0.004 * rng.standard_normal(num_frames)
    points = np.repeat(rest[None], num_frames, axis=0)
    points[:, lower, 1] += opening[:, None]
    return MouthMotion(points, fps, rest)


def test_gain_scales_the_opening_amplitude():
    motion = _synthetic()
    for gain in (1.5, 0.5):
        edited = edit_motion(motion, gain=gain)
        assert np.std(edited.opening()) / np.std(motion.opening()) == pytest.approx(gain, rel=1e-4)
        np.testing.assert_allclose(edited.rest, motion.rest)


def test_time_shift_moves_the_cross_correlation_peak():
    motion = _synthetic()
    shifted = edit_motion(motion, shift=5)
    a = motion.opening() - motion.opening().mean()
    b = shifted.opening() - shifted.opening().mean()
    lags = np.arange(-10, 11)
    scores = [np.dot(a[10:-10], np.roll(b, -lag)[10:-10]) for lag in lags]
    assert lags[int(np.argmax(scores))] == 5
    np.testing.assert_allclose(shifted.points[5:], motion.points[:-5], atol=1e-6)


def test_smoothing_width_bias_and_blend():
    motion = _synthetic()
    jitter = np.abs(np.diff(motion.opening(), 2)).mean()
    assert np.abs(np.diff(edit_motion(motion, smoothing=2.0).opening(), 2)).mean() < 0.3 * jitter
    wider = edit_motion(motion, width_bias=0.2)
    np.testing.assert_allclose(wider.width(), motion.width() * 1.2, rtol=1e-4)
    still = MouthMotion(np.repeat(motion.rest[None], motion.num_frames, axis=0), FPS, motion.rest)
    half = edit_motion(motion, other=still, blend=0.5)
    assert np.std(half.opening()) / np.std(motion.opening()) == pytest.approx(0.5, rel=1e-4)
    # the other motion is resampled to this one's fps before blending
    half_at_50 = edit_motion(motion, other=still.resample(50), blend=0.5)
    np.testing.assert_allclose(half_at_50.points, half.points, atol=1e-6)
    with pytest.raises(ValueError, match="different lengths: 100 frames and 60 frames"):
        edit_motion(motion, other=_synthetic(60), blend=0.5)


def test_resample_and_fit_to_a_video():
    motion = _synthetic(100, fps=25)
    doubled = motion.resample(50)
    assert doubled.num_frames == 200 and doubled.fps == 50
    # frame j at 50 fps is the instant (j + 0.5) / 50, i.e. 25 fps frame j / 2 - 0.25 (ends held)
    expected = np.interp(np.arange(200) / 2 - 0.25, np.arange(100), motion.opening())
    np.testing.assert_allclose(doubled.opening(), expected, atol=1e-6)
    np.testing.assert_allclose(doubled.resample(25).opening()[1:-1], motion.opening()[1:-1], atol=0.01)
    fitted = motion.fit(120, 30)  # 4 s at 30 fps: resampled, not an error
    assert fitted.num_frames == 120 and fitted.fps == 30
    assert motion.fit(101, 25).num_frames == 101  # one frame of rounding is absorbed
    with pytest.raises(ValueError, match=r"100 frames at 25 fps.*the video has 150 frames"):
        motion.fit(150, 25)
    with pytest.raises(ValueError, match="must be"):
        MouthMotion(np.zeros((10, 20, 2)), 25)


def test_preview_plots_both_curves():
    motion = _synthetic()
    image = plot_motion([motion, edit_motion(motion, gain=1.5)], ["audio", "x1.5"])
    assert image.shape == (320, 768, 3) and image.dtype == np.uint8
    blue = (image[..., 2] > 200) & (image[..., 0] < 120)
    orange = (image[..., 0] > 200) & (image[..., 2] < 120)
    assert blue.sum() > 500 and orange.sum() > 500
    # the exaggerated curve spans more rows of the opening panel
    top = slice(10, 150)
    assert np.ptp(np.flatnonzero(orange[top].any(1))) >= np.ptp(np.flatnonzero(blue[top].any(1)))
    assert mouth_width(motion.rest) > 0
