"""The toy world and its pixel ruler (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_core.face import FaceTrack, face_masks
from lipsync_core.metrics import pearson, slope
from lipsync_core.toy.characters import STYLES
from lipsync_core.toy.measure import measure_opening, measure_width
from lipsync_core.toy.speech import HELD_OUT_SENTENCES, SENTENCES
from lipsync_core.toy.world import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(train_identities=6, eval_identities=2, clips_per_identity=1, seed=11))


def test_world_is_deterministic_with_held_out_identities_and_sentences(world):
    again = generate_world(WorldConfig(train_identities=6, eval_identities=2, clips_per_identity=1, seed=11))
    assert all(np.array_equal(a.frames, b.frames) and np.array_equal(a.waveform, b.waveform)
               for a, b in zip(world, again))
    train = [c for c in world if c.split == "train"]
    held = [c for c in world if c.split == "eval"]
    assert {c.identity for c in train}.isdisjoint({c.identity for c in held})
    held_out = set(range(len(SENTENCES) - HELD_OUT_SENTENCES, len(SENTENCES)))
    assert all(set(c.sentences) <= held_out for c in held)
    assert all(not set(c.sentences) & held_out for c in train)
    assert {c.style for c in world} <= set(STYLES) and len({c.style for c in world}) >= 3
    for clip in world:
        assert clip.frames.shape[1:] == (64, 64, 3) and clip.landmarks.shape == (len(clip.frames), 478, 2)
        assert clip.mask.shape == (len(clip.frames), 64, 64) and clip.mask.dtype == np.uint8
        # Held-out clips keep the rendered video and its landmarks (the user's-path proof dubs those).
        assert (clip.video is not None) == (clip.split == "eval")
        assert abs(len(clip.waveform) / 16000 * 25 - len(clip.frames)) < 1
        if not clip.sentences:
            continue
        # Speech opens the mouth; silence (start, gap, end) keeps it exactly closed.
        assert clip.silent[0] and clip.silent[-1] and 0.1 < clip.silent.mean() < 0.6
        assert np.all(clip.opening[clip.silent] == 0) and clip.opening.max() > 0.35
    # Each training identity also has a clip in which it only listens: silent throughout, mouth shut.
    listening = [c for c in world if not c.sentences]
    assert {c.identity for c in listening} == {c.identity for c in train}
    assert all(c.split == "train" for c in listening)
    assert all(not c.waveform.any() and c.silent.all() and not c.opening.any() for c in listening)
    assert all(1.5 * 25 - 1 <= len(c.frames) <= 3.0 * 25 + 1 for c in listening)
    # Training masks vary in size (the held-out ones are inference's), so size tells nothing of the mouth.
    expands = [c.meta["mask_expand"] for c in train]
    assert np.ptp(expands) > 0.03 and all(0.04 <= e <= 0.12 for e in expands)
    assert all(c.meta["mask_expand"] == 0.08 for c in held)


def test_ruler_reads_the_opening_from_pixels(world):
    measured = np.concatenate([measure_opening(c.frames, c.landmarks) for c in world])
    truth = np.concatenate([c.opening for c in world])
    silent = np.concatenate([c.silent for c in world])
    assert pearson(measured, truth) > 0.97
    assert np.all(measured[silent] < 0.15)  # the evaluation's closed-mouth threshold
    # A frame with the mouth painted over in skin colour reads as closed; a black box as wide open.
    clip = world[0]
    frame, points = clip.frames[:1].copy(), clip.landmarks[:1]
    open_frame = int(np.argmax(clip.opening))
    measured_open = measure_opening(clip.frames[open_frame:open_frame + 1], clip.landmarks[open_frame:open_frame + 1])
    assert measured_open[0] > 0.8 * clip.opening[open_frame]
    cx, cy = points[0, [61, 291]].mean(0).round().astype(int)
    frame[0, cy - 2:cy + 3, cx - 3:cx + 4] = (40, 8, 16)
    assert measure_opening(frame, points)[0] > 0.5


def test_masks_come_from_the_team_mask_and_ignore_the_mouth(world):
    clip = max(world, key=lambda c: c.opening.max())
    masks = clip.mask
    # Mouth and chin inside, eyes outside.
    for t in (0, int(np.argmax(clip.opening))):
        points = clip.landmarks[t]
        for index in (13, 14, 61, 291, 152):
            x, y = points[index].round().astype(int)
            assert masks[t, min(y, 63), x] > 200, index
        for index in (468, 473):
            x, y = points[index].round().astype(int)
            assert masks[t, y, x] < 13  # at most a faint feather tail at the eyes


def test_talking_source_moves_the_jaw_but_not_the_held_mask(world):
    """The source jaw drops as the mouth opens; a mask drawn per frame would follow it (and tell the
    model the source mouth), the world's held mask (the pipeline's) does not."""
    for clip in (c for c in world if c.opening.max() > 0.6):
        chin = clip.landmarks[:, 152, 1] - clip.landmarks[:, [33, 263], 1].mean(1)  # chin below the eyes
        assert pearson(chin, clip.opening) > 0.6
        # Frame-to-frame changes of the mask area against those of the opening (head motion and scale
        # change the area slowly; the jaw quickly).
        per_frame = face_masks(FaceTrack(clip.landmarks, np.ones(len(clip.frames), bool), (64, 64)))
        opening_change = np.diff(clip.opening)
        assert pearson(np.diff(per_frame.sum((1, 2))), opening_change) > 0.5
        assert abs(pearson(np.diff(clip.mask.astype(np.float32).sum((1, 2))), opening_change)) < 0.25


def test_head_turns_and_scale_changes(world):
    clip = next(c for c in world if c.split == "eval")
    points = clip.video_landmarks
    nose_offset = (points[:, 1, 0] - points[:, [234, 454], 0].mean(1)) / np.ptp(points[:, [234, 454], 0], axis=1)
    face_width = np.linalg.norm(points[:, 454] - points[:, 234], axis=1)
    assert np.ptp(nose_offset) > 0.05  # the nose moves across the face: the head turns
    assert face_width.max() / face_width.min() > 1.04  # the head comes closer and goes back


def test_outside_the_mask_a_talking_source_looks_like_a_silent_one():
    """What the model sees of the source (the crop outside the held mask) must not tell how the
    source mouth moves: the same character and head motion, talking or with the mouth shut."""
    from lipsync_core.toy.characters import Character
    from lipsync_core.toy.world import crop_clip, render_clip

    config = WorldConfig()
    frames = 40
    talking = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(frames) / config.fps)).astype(np.float32)
    character = Character.random(np.random.default_rng([3, 1]), 2 * config.video_size)
    crops = {}
    for name, opening in (("talking", talking), ("shut", np.zeros(frames, np.float32))):
        video, points = render_clip(character, opening, np.full(frames, 0.5, np.float32), config.video_size,
                                    np.random.default_rng(7), config.fps)
        crops[name], _, masks = crop_clip(video, points, config)
        if name == "talking":
            outside = masks == 0
    difference = np.abs(crops["talking"].astype(np.int16) - crops["shut"]).max(-1)
    assert outside.mean() > 0.4
    assert np.mean(difference[outside]) < 0.05


def test_each_character_speaks_in_its_own_style(world):
    """Gain, width and crispness are the character's (all its clips share them) and show in the pixels."""
    styles = {}
    for clip in world:
        styles.setdefault(clip.identity, clip.meta["speaking_style"])
        assert clip.meta["speaking_style"] == styles[clip.identity]
    gains = [s["gain"] for s in styles.values()]
    assert np.ptp(gains) > 0.3 and all(0.55 <= g <= 1.3 for g in gains)
    talking = [c for c in world if c.sentences]
    amplitude = [slope(measure_opening(c.frames, c.landmarks)[~c.silent], c.neutral_opening[~c.silent])
                 for c in talking]
    assert pearson(amplitude, [c.meta["speaking_style"]["gain"] for c in talking]) > 0.8
    # The width bias moves the open mouth's measured width, relative to the same mouth at rest.
    widths = []
    for clip in talking:
        face = np.linalg.norm(clip.landmarks[:, 454] - clip.landmarks[:, 234], axis=1) / 2
        rest = (np.linalg.norm(clip.landmarks[:, 291] - clip.landmarks[:, 61], axis=1) / face)[clip.silent].mean()
        open_frames = ~clip.silent & (clip.opening > 0.25)
        widths.append(measure_width(clip.frames, clip.landmarks)[open_frames].mean() / rest)
    assert pearson(widths, [c.width[~c.silent & (c.opening > 0.25)].mean() for c in talking]) > 0.6
    # A neutral world (speaking_styles=False) has no style to learn.
    neutral = generate_world(WorldConfig(train_identities=1, eval_identities=0, clips_per_identity=1, seed=11,
                                         speaking_styles=False, listening_clips_per_identity=0))
    assert neutral[0].meta["speaking_style"] == {"gain": 1.0, "width_bias": 0.0, "laziness": 0.0}
    np.testing.assert_array_equal(neutral[0].opening, neutral[0].neutral_opening)


def test_training_clips_vary_the_style_and_held_out_clips_do_not():
    """train_clip_gain / train_clip_width: each training clip's gain and width bias vary around its character's,
    visibly in the pixels; the held-out clips and every random draw besides are those of the plain world."""
    kwargs = dict(train_identities=4, eval_identities=1, clips_per_identity=2, seed=11, listening_clips_per_identity=0)
    plain = generate_world(WorldConfig(**kwargs))
    varied = generate_world(WorldConfig(**kwargs, train_clip_gain=1.5, train_clip_width=0.15))
    for before, after in zip(plain, varied):
        assert after.meta["speaking_style"] == before.meta["speaking_style"]
        np.testing.assert_array_equal(after.neutral_opening, before.neutral_opening)
        if after.split == "eval":
            np.testing.assert_array_equal(after.frames, before.frames)
            assert after.meta["clip_style"] == after.meta["speaking_style"]
    train = [c for c in varied if c.split == "train"]
    factors = [c.meta["clip_style"]["gain"] / c.meta["speaking_style"]["gain"] for c in train]
    assert all(1 / 1.5 <= f <= 1.5 for f in factors) and np.ptp(factors) > 0.2
    offsets = [c.meta["clip_style"]["width_bias"] - c.meta["speaking_style"]["width_bias"] for c in train]
    assert all(abs(o) <= 0.15 for o in offsets) and np.ptp(offsets) > 0.05
    # Two clips of one character now open the mouth by different amounts: the pixels follow the clip's gain.
    amplitude = [slope(measure_opening(c.frames, c.landmarks)[~c.silent], c.neutral_opening[~c.silent])
                 for c in train]
    assert pearson(amplitude, [c.meta["clip_style"]["gain"] for c in train]) > 0.9
    with pytest.raises(ValueError, match="train_clip_gain"):
        WorldConfig(train_clip_gain=0.5)
