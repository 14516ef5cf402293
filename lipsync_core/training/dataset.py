"""Training windows from shards: one class for real prepared video and the toy world."""

from __future__ import annotations

import os

import numpy as np
import torch

from .shards import ShardIndex, read_clip


class LipSyncWindows(torch.utils.data.Dataset):
    """Every window of ``num_frames`` consecutive frames (step ``stride``) of every clip in a shard folder.

    An item holds the window in the model's layouts (ARCHITECTURE.md): ``frames`` [T, 3, S, S] in -1..1,
    ``mask`` [T, 1, S, S], ``audio`` [T, L, W, D] float32, ``reference`` [3, S, S] -- a frame of the
    same clip at least ``reference_gap`` frames away from the window (ours: the model must not be able
    to copy the target mouth from it) -- and ``latents`` / ``masked_latents`` when the shards carry
    them (``use_latents``; otherwise the trainer encodes frames on the fly), and with ``landmarks`` the
    window's ``landmarks`` [T, 478, 2] (crop pixels, NaN without a face; the mouth-motion condition).
    Randomness (the reference frame) depends only on (seed, epoch, index), so a resumed run sees exactly the
    items it would have seen.
    """

    def __init__(self, folder: str | os.PathLike, num_frames: int, stride: int | None = None,
                 reference_gap: int | None = None, use_latents: bool = True, seed: int = 0,
                 splits: tuple[str, ...] | None = None, landmarks: bool = False):
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        self.index = ShardIndex.scan(folder)
        self.num_frames = num_frames
        self.reference_gap = num_frames if reference_gap is None else reference_gap
        # Cached latents are used when the shards carry them (prep --latents, the toy world).
        first_path, first_clip = self.index.entries[0][:2]
        self.use_latents = use_latents and bool(read_clip(first_path, first_clip, ("latents",), slice(0, 1)))
        self.seed = seed
        self.landmarks = landmarks
        self.epoch = 0
        stride = stride or max(num_frames // 2, 1)
        self.windows: list[tuple[int, int]] = []
        for entry, (_, _, length, info) in enumerate(self.index.entries):
            if splits is not None and info.get("split", "train") not in splits:
                continue
            for start in range(0, length - num_frames + 1, stride):
                self.windows.append((entry, start))
        if not self.windows:
            raise ValueError(f"No clip in {folder} has {num_frames} frames" +
                             (f" in splits {splits}" if splits else ""))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows)

    def reference_index(self, rng: np.random.Generator, length: int, start: int) -> int:
        far = [i for i in range(length) if i < start - self.reference_gap or i >= start + self.num_frames +
               self.reference_gap]
        if far:
            return int(far[rng.integers(len(far))])
        # Short clip: the frame farthest from the window's centre.
        centre = start + self.num_frames / 2
        return int(max(range(length), key=lambda i: abs(i - centre)))

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        entry, start = self.windows[item]
        path, clip, length, _ = self.index.entries[entry]
        rng = np.random.default_rng([self.seed, self.epoch, item])
        reference = self.reference_index(rng, length, start)
        keys = ("frames", "mask", "whisper") + (("latents", "masked_latents") if self.use_latents else ())
        keys += ("landmarks",) if self.landmarks else ()
        window = read_clip(path, clip, keys, slice(start, start + self.num_frames))
        if self.use_latents and "latents" not in window:
            raise ValueError(f"{path} has no cached latents while other shards do; prepare all shards alike")
        ref_frame = read_clip(path, clip, ("frames",), slice(reference, reference + 1))["frames"][0]
        item_out = {
            "frames": window["frames"].permute(0, 3, 1, 2).float() / 127.5 - 1.0,
            "mask": window["mask"].float()[:, None] / 255.0,
            "audio": window["whisper"].float(),
            "reference": ref_frame.permute(2, 0, 1).float() / 127.5 - 1.0,
        }
        if self.use_latents:
            item_out["latents"] = window["latents"].float()
            item_out["masked_latents"] = window["masked_latents"].float()
        if self.landmarks:
            item_out["landmarks"] = window["landmarks"].float()
        return item_out
