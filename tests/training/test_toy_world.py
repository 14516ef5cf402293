"""The toy world and its pixel ruler (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_core.toy.measure import measure_opening, pearson
from lipsync_core.toy.run import world_masks
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
    assert {c.style for c in world} == {"photo", "cartoon"}
    for clip in world:
        assert clip.frames.shape[1:] == (64, 64, 3) and clip.landmarks.shape == (len(clip.frames), 478, 2)
        assert abs(len(clip.waveform) / 16000 * 25 - len(clip.frames)) < 1
        # Speech opens the mouth; silence (start, gap, end) keeps it exactly closed.
        assert clip.silent[0] and clip.silent[-1] and 0.1 < clip.silent.mean() < 0.6
        assert np.all(clip.opening[clip.silent] == 0) and clip.opening.max() > 0.8


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
    assert measure_opening(clip.frames[open_frame:open_frame + 1], clip.landmarks[open_frame:open_frame + 1])[0] > 0.6
    cx, cy = points[0, [61, 291]].mean(0).round().astype(int)
    frame[0, cy - 2:cy + 3, cx - 3:cx + 4] = (40, 8, 16)
    assert measure_opening(frame, points)[0] > 0.5


def test_masks_come_from_the_team_mask_and_ignore_the_mouth(world):
    clip = max(world, key=lambda c: c.opening.max())
    masks = world_masks(clip.landmarks, 64)
    assert masks.dtype == np.uint8 and masks.shape == (len(clip.frames), 64, 64)
    # Mouth and chin inside, eyes outside.
    for t in (0, int(np.argmax(clip.opening))):
        points = clip.landmarks[t]
        for index in (13, 14, 61, 291, 152):
            x, y = points[index].round().astype(int)
            assert masks[t, min(y, 63), x] > 200, index
        for index in (468, 473):
            x, y = points[index].round().astype(int)
            assert masks[t, y, x] < 13  # at most a faint feather tail at the eyes
