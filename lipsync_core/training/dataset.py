"""Training windows from shards: one class for real prepared video and the toy world."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..motion import MOUTH_POINTS, NUM_MOUTH_POINTS, estimate_rest, in_rest_widths
from ..tensors import uint8_to_mask, uint8_to_model
from .shards import ShardIndex, read_clip


class LipSyncWindows(torch.utils.data.Dataset):
    """Every window of ``num_frames`` consecutive frames (step ``stride``) of every clip in a shard folder.

    An item holds the window in the model's layouts (ARCHITECTURE.md): ``frames`` [T, 3, S, S] in -1..1,
    ``mask`` [T, 1, S, S], ``audio`` [T, L, W, D] float32, ``reference`` [3, S, S] -- a frame of the
    same clip at least ``reference_gap`` frames away from the window (ours: the model must not be able
    to copy the target mouth from it) -- and ``latents`` / ``masked_latents`` when the shards carry
    them (``use_latents``; otherwise the trainer encodes frames on the fly), and with ``landmarks`` the
    window's ``landmarks`` [T, 478, 2] (crop pixels, NaN without a face; the mouth-motion condition).
    With ``style_frames`` R > 0 also a speaking-style reference: ``style_frames`` [R, 3, S, S]
    and ``style_audio`` [R, L, W, D] (with ``landmarks`` also ``style_lips`` [R, 40, 2], ``mouth_target``'s
    layout) from another clip of the same speaker (``clip_identity``) that has
    speech, else a stretch of the same clip away from the window, else none (``has_style`` False), and with
    ``landmarks`` the style encoder's target ``mouth_target`` [T, 40, 2] (``mouth_target``).
    Randomness (the reference frame) depends only on (seed, epoch, index), so a resumed run sees exactly the
    items it would have seen.
    """

    def __init__(self, folder: str | os.PathLike, num_frames: int, stride: int | None = None,
                 reference_gap: int | None = None, use_latents: bool = True, seed: int = 0,
                 splits: tuple[str, ...] | None = None, landmarks: bool = False, style_frames: int = 0):
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
        self.style_frames = style_frames
        self.epoch = 0
        self._rests: dict[int, np.ndarray | None] = {}  # resting mouth per clip (mouth_target), read once
        # Clips that can serve as a style reference, by speaker: long enough and not a listening clip.
        self.references: dict[str, list[int]] = {}
        for entry, (_, _, length, info) in enumerate(self.index.entries):
            if style_frames and length >= style_frames and not info.get("listening"):
                self.references.setdefault(clip_identity(info), []).append(entry)
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
            "frames": uint8_to_model(window["frames"]),
            "mask": uint8_to_mask(window["mask"]),
            "audio": window["whisper"].float(),
            "reference": uint8_to_model(ref_frame[None])[0],
        }
        if self.use_latents:
            item_out["latents"] = window["latents"].float()
            item_out["masked_latents"] = window["masked_latents"].float()
        if self.landmarks:
            item_out["landmarks"] = window["landmarks"].float()
        if self.style_frames:
            item_out.update(self.style_reference(rng, entry, start))
            if self.landmarks:
                item_out["mouth_target"] = self.mouth_target(entry, window["landmarks"].float().numpy())
        return item_out

    def mouth_target(self, entry: int, landmarks: np.ndarray) -> torch.Tensor:
        """The style encoder's target ``[T, 40, 2]``: the window's lip points' displacement from the clip's
        resting mouth, in rest widths (``motion.in_rest_widths``); NaN without a face."""
        if entry not in self._rests:
            path, clip = self.index.entries[entry][:2]
            points = read_clip(path, clip, ("landmarks",))["landmarks"].float().numpy()[:, list(MOUTH_POINTS)]
            valid = np.isfinite(points).all(axis=(1, 2))
            self._rests[entry] = estimate_rest(points[valid]) if valid.any() else None
        rest = self._rests[entry]
        if rest is None:
            return torch.full((len(landmarks), NUM_MOUTH_POINTS, 2), float("nan"))
        return torch.from_numpy(in_rest_widths(landmarks[:, list(MOUTH_POINTS)], rest))

    def style_reference(self, rng: np.random.Generator, entry: int, start: int) -> dict[str, torch.Tensor]:
        count = self.style_frames
        path, clip, length, info = self.index.entries[entry]
        others = [e for e in self.references.get(clip_identity(info), []) if e != entry]
        span = None
        source = entry
        if others:
            source = other = others[rng.integers(len(others))]
            path, clip, length, _ = self.index.entries[other]
            begin = int(rng.integers(0, length - count + 1))
            span = slice(begin, begin + count)
        else:  # the same clip, clear of the window by reference_gap on the side with room
            before = start - self.reference_gap - count
            after = start + self.num_frames + self.reference_gap
            if before >= 0:
                span = slice(before, before + count)
            elif after + count <= length:
                span = slice(after, after + count)
        lips = {}
        if span is None:
            first = self.index.entries[entry]
            shape = read_clip(first[0], first[1], ("frames", "whisper"), slice(0, 1))
            if self.landmarks:
                lips = {"style_lips": torch.zeros(count, NUM_MOUTH_POINTS, 2)}
            return {"style_frames": torch.zeros(count, 3, *shape["frames"].shape[1:3]),
                    "style_audio": torch.zeros(count, *shape["whisper"].shape[1:]),
                    "has_style": torch.tensor(False), **lips}
        window = read_clip(path, clip, ("frames", "whisper") + (("landmarks",) if self.landmarks else ()), span)
        if self.landmarks:  # the reference's lip points, 0 (rest) where no face was found
            lips = {"style_lips": self.mouth_target(source, window["landmarks"].float().numpy()).nan_to_num(0.0)}
        return {"style_frames": uint8_to_model(window["frames"]),
                "style_audio": window["whisper"].float(), "has_style": torch.tensor(True), **lips}


def clip_identity(info: dict) -> str:
    """Who speaks in a shard clip: its ``identity`` (the toy world's), else its source video's name up to a
    ``__`` (``anna__take2.mp4`` and ``anna__take5.mp4`` are one speaker), else the whole name."""
    if "identity" in info:
        return str(info["identity"])
    return str(info.get("source", "")).rsplit(".", 1)[0].split("__")[0]
