"""Fixtures for the training tests: a few real toy-world clips written as shards (no cached latents)."""

from __future__ import annotations

import pytest
import torch

from lipsync_core.audio import Audio
from lipsync_core.toy.world import WorldConfig, generate_world
from lipsync_core.training.prep import mask_info
from lipsync_core.training.shards import write_shard


@pytest.fixture(scope="session")
def toy_clips():
    """Two short clips of two identities (real espeak speech), 64x64 crops, masks held for 0.3 s."""
    return generate_world(WorldConfig(train_identities=2, eval_identities=0, clips_per_identity=1,
                                      sentences_per_clip=1, seed=3, mask_hold=0.3))


@pytest.fixture(scope="session")
def shard_folder(tmp_path_factory, toy_clips, whisper_encoder):
    folder = tmp_path_factory.mktemp("shards")
    for number, clip in enumerate(toy_clips):
        features = whisper_encoder.frame_features(Audio(torch.from_numpy(clip.waveform), 16000), 25,
                                                  num_frames=len(clip.frames))
        data = {"frames": clip.frames, "mask": clip.mask, "landmarks": clip.landmarks,
                "whisper": features.half().numpy()}
        info = {"source": f"toy-{number}", "start_frame": 0, "fps": 25.0, "num_frames": len(clip.frames),
                **mask_info(64, "nose", 0.3)}
        write_shard(folder / f"shard-{number:05d}.safetensors", [data], [info])
    return folder
