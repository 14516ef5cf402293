"""Shards and the training windows dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipsync_core.training.dataset import LipSyncWindows
from lipsync_core.training.shards import ShardIndex, read_clip, write_shard


def test_shard_round_trip_and_partial_read(shard_folder, toy_clips):
    index = ShardIndex.scan(shard_folder)
    assert [entry[2] for entry in index.entries] == [len(c.frames) for c in toy_clips]
    path, clip, _, info = index.entries[1]
    assert info["source"] == "toy-1"
    window = read_clip(path, clip, ("frames", "whisper"), slice(5, 9))
    assert set(window) == {"frames", "whisper"}
    np.testing.assert_array_equal(window["frames"].numpy(), toy_clips[1].frames[5:9])
    assert window["whisper"].shape == (4, 5, 10, 384)


def test_bad_shards_are_refused(tmp_path):
    with pytest.raises(ValueError, match="No shards"):
        ShardIndex.scan(tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        write_shard(tmp_path / "x.safetensors", [{"frames": np.zeros((2, 8, 8, 3), np.uint8)}], [{}])
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a SayAnything training shard"):
        ShardIndex.scan(tmp_path)


def test_windows_layouts_and_reference_away_from_window(shard_folder):
    dataset = LipSyncWindows(shard_folder, num_frames=8, use_latents=False, seed=1)
    item = dataset[3]
    assert item["frames"].shape == (8, 3, 64, 64) and item["frames"].min() >= -1 and item["frames"].max() <= 1
    mask = item["mask"]
    assert mask.shape == (8, 1, 64, 64) and mask.min() == 0 and mask.max() == 1  # feathered edge in between
    assert item["audio"].shape == (8, 5, 10, 384) and item["audio"].dtype == torch.float32
    assert item["reference"].shape == (3, 64, 64)
    # The reference frame is at least num_frames away from the window on every draw.
    entry, start = dataset.windows[3]
    path, clip, length, _ = dataset.index.entries[entry]
    frames = read_clip(path, clip, ("frames",))["frames"].permute(0, 3, 1, 2).float() / 127.5 - 1
    for epoch in range(4):
        dataset.set_epoch(epoch)
        reference = dataset[3]["reference"]
        matches = [i for i in range(length) if torch.equal(frames[i], reference)]
        assert matches and all(i < start - 8 or i >= start + 16 for i in matches)
    # Same (seed, epoch, index) -> same item: what an exact resume relies on.
    dataset.set_epoch(2)
    assert torch.equal(dataset[5]["reference"], dataset[5]["reference"])
    # Shards without cached latents: the trainer encodes frames itself.
    assert LipSyncWindows(shard_folder, num_frames=8, use_latents=True).use_latents is False


def test_the_style_target_is_the_lip_motion_from_the_clips_resting_mouth(shard_folder, toy_clips):
    from lipsync_core.motion import MOUTH_POINTS

    dataset = LipSyncWindows(shard_folder, num_frames=8, stride=8, use_latents=False, landmarks=True,
                             style_frames=10)
    upper, lower = MOUTH_POINTS.index(13), MOUTH_POINTS.index(14)
    speaking = [(entry, clip) for entry, clip in enumerate(toy_clips) if clip.opening.max() > 0]
    assert speaking
    for entry, clip in speaking:  # (the listening clips keep their mouths shut)
        numbers = [n for n, (e, _) in enumerate(dataset.windows) if e == entry]
        targets = torch.cat([dataset[n]["mouth_target"] for n in numbers]).numpy()
        assert targets.shape[1:] == (40, 2) and np.isfinite(targets).all()
        opening = targets[:, lower, 1] - targets[:, upper, 1]  # in rest widths, 0 = the resting gap
        truth = clip.opening[: len(opening)]
        assert np.corrcoef(opening, truth)[0, 1] > 0.9
        assert abs(float(np.median(opening[truth < 0.02]))) < 0.02  # a shut mouth is at rest
        assert opening.max() > 0.1  # ...and an open one is well away from it
    item = dataset[0]  # the style reference's lips come in the same layout, for its own frames
    assert item["style_lips"].shape == (10, 40, 2) and torch.isfinite(item["style_lips"]).all()
    assert item["has_style"] and item["style_lips"].abs().max() > 0


def _numbered_clip(length: int, value: int) -> dict[str, np.ndarray]:
    """A clip whose every frame and feature says which clip and frame it is (frame f of clip v: v * 100 + f)."""
    codes = value * 100 + np.arange(length)
    frames = np.broadcast_to((codes % 256).astype(np.uint8)[:, None, None, None], (length, 8, 8, 3)).copy()
    whisper = np.broadcast_to(codes.astype(np.float16)[:, None, None, None], (length, 5, 10, 384)).copy()
    return {"frames": frames, "mask": np.zeros((length, 8, 8), np.uint8), "whisper": whisper,
            "landmarks": np.zeros((length, 478, 2), np.float32)}


def test_style_references_come_from_another_clip_of_the_same_speaker(tmp_path):
    # speaker a: two talking clips and a listening one; speaker b: one long clip; speaker c: one short clip
    clips = [_numbered_clip(30, 1), _numbered_clip(30, 2), _numbered_clip(30, 3), _numbered_clip(60, 4),
             _numbered_clip(12, 5)]
    infos = [{"source": "a__take1.mp4"}, {"source": "a__take2.mp4"}, {"source": "a__idle.mp4", "listening": True},
             {"source": "b.mp4"}, {"source": "c.mp4"}]
    for info, clip in zip(infos, clips):
        info.update({"start_frame": 0, "fps": 25.0, "num_frames": len(clip["frames"])})
    write_shard(tmp_path / "shard-00000.safetensors", clips, infos)
    dataset = LipSyncWindows(tmp_path, num_frames=4, stride=4, use_latents=False, style_frames=10)

    def reference_codes(item: dict) -> np.ndarray:
        return item["style_audio"][:, 0, 0, 0].numpy().astype(int)

    for number, (entry, start) in enumerate(dataset.windows):
        item = dataset[number]
        codes = reference_codes(item)
        assert item["style_frames"].shape == (10, 3, 8, 8) and item["style_audio"].shape == (10, 5, 10, 384)
        if entry in (0, 1, 2):  # speaker a: always another talking clip, never the listening one
            assert bool(item["has_style"]) and len(set(codes // 100)) == 1
            assert set(codes // 100) <= {1, 2} - {entry + 1}
        elif entry == 3:  # speaker b has one clip: a stretch of it clear of the window
            assert bool(item["has_style"]) and set(codes // 100) == {4}
            frames = codes % 100
            assert frames.max() < start - 4 or frames.min() >= start + 8
        else:  # speaker c: too short for a reference anywhere
            assert not bool(item["has_style"]) and not item["style_audio"].any()
            continue
        np.testing.assert_array_equal(np.diff(codes), 1)  # consecutive frames of one clip
