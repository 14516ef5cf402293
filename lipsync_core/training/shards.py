"""Training shards: one safetensors file holds several fixed-length clips (ours).

Per clip ``j`` the file has tensors ``{j}.frames`` uint8 [T, S, S, 3] (aligned crops),
``{j}.mask`` uint8 [T, S, S] (255 = regenerate), ``{j}.landmarks`` float32 [T, 478, 2] (crop pixels,
NaN where no face), ``{j}.whisper`` float16 [T, L, W, D], optionally ``{j}.latents`` /
``{j}.masked_latents`` float16 [T, C, h, w] (already multiplied by the VAE scaling factor) and any
extra per-frame arrays (the toy world adds ``{j}.opening`` and ``{j}.silent``). The metadata holds
``{"format": "sayanything-shard", "format_version": "1", "clips": <json list of per-clip dicts>}``;
each dict has at least ``source``, ``start_frame``, ``fps`` and ``num_frames``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHARD_FORMAT = "sayanything-shard"
SHARD_VERSION = "1"
REQUIRED_KEYS = ("frames", "mask", "landmarks", "whisper")


def write_shard(path: str | os.PathLike, clips: list[dict[str, np.ndarray]], infos: list[dict]) -> None:
    """Write clips (dicts of per-frame arrays) atomically: a crash never leaves a half-written shard."""
    from safetensors.torch import save_file

    if len(clips) != len(infos):
        raise ValueError("write_shard needs one info dict per clip")
    tensors = {}
    for index, clip in enumerate(clips):
        missing = [key for key in REQUIRED_KEYS if key not in clip]
        if missing:
            raise ValueError(f"clip {index} lacks {missing}; a shard clip needs {list(REQUIRED_KEYS)}")
        lengths = {key: len(value) for key, value in clip.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"clip {index}: per-frame arrays differ in length {lengths}")
        for key, value in clip.items():
            tensors[f"{index}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    metadata = {"format": SHARD_FORMAT, "format_version": SHARD_VERSION, "clips": json.dumps(infos)}
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)


@dataclass
class ShardIndex:
    """Where each clip lives: (shard path, clip key, number of frames, info)."""

    entries: list[tuple[str, int, int, dict]]

    @classmethod
    def scan(cls, folder: str | os.PathLike) -> ShardIndex:
        from safetensors import safe_open

        folder = Path(folder)
        paths = sorted(folder.glob("*.safetensors"))
        if not paths:
            raise ValueError(f"No shards (*.safetensors) in {folder}; write some with `python -m lipsync_core prep`"
                             " or `python -m lipsync_core toy`.")
        entries = []
        for path in paths:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            if metadata.get("format") != SHARD_FORMAT:
                raise ValueError(f"{path} is not a SayAnything training shard (metadata format "
                                 f"{metadata.get('format')!r}, expected {SHARD_FORMAT!r})")
            for index, info in enumerate(json.loads(metadata["clips"])):
                entries.append((str(path), index, int(info["num_frames"]), info))
        return cls(entries)


def read_clip(path: str, index: int, keys: tuple[str, ...] | None = None,
              frames: slice | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one clip (optionally only some keys / a frame range; safetensors reads just those bytes)."""
    from safetensors import safe_open

    out = {}
    prefix = f"{index}."
    with safe_open(path, "pt") as handle:
        for name in handle.keys():
            if not name.startswith(prefix):
                continue
            key = name[len(prefix):]
            if keys is not None and key not in keys:
                continue
            out[key] = handle.get_slice(name)[frames] if frames is not None else handle.get_tensor(name)
    return out
