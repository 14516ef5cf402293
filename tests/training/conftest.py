"""Fixtures for the training tests: a few real toy-world clips written as shards (no cached latents), and the
CI-sized toy proof run beside the rest of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


class QuickToyRun:
    """``python -m lipsync_core toy OUT --quick`` in its own process, started as soon as the tests are collected.

    Why: it is most of the default suite's time (about 20 min) and trains on one core, so it runs while the
    other tests use the other core; ``quick_toy_run`` waits for it.
    """

    def __init__(self) -> None:
        from tests.support.whisper import converted_whisper_tiny

        self.output = Path(tempfile.mkdtemp(prefix="sayanything-quick-toy-run-"))
        self.log = self.output / "toy.log"
        command = [sys.executable, "-m", "lipsync_core", "toy", str(self.output / "run"), "--quick",
                   "--whisper", str(converted_whisper_tiny()), "--threads", "1"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=Path(__file__).resolve().parents[2],
                                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))

    def wait(self) -> Path:
        """The run's folder once the process has ended well (``results.json``, ``run/model.safetensors``)."""
        returncode = self.process.wait()
        assert returncode == 0, f"the quick toy run failed ({returncode}):\n{self.log.read_text()[-4000:]}"
        return self.output / "run"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.output, ignore_errors=True)


QUICK_TOY_RUN = pytest.StashKey[QuickToyRun]()


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = any("quick_toy_run" in getattr(item, "fixturenames", ()) for item in session.items)
    if wanted and not session.config.option.collectonly:
        session.config.stash[QUICK_TOY_RUN] = QuickToyRun()


def pytest_unconfigure(config: pytest.Config) -> None:
    if QUICK_TOY_RUN in config.stash:
        config.stash[QUICK_TOY_RUN].close()


@pytest.fixture(scope="session")
def quick_toy_run(request) -> Path:
    """The folder of the CI-sized toy proof's run (its output folder: ``results.json``, ``run/``)."""
    if QUICK_TOY_RUN not in request.config.stash:  # selected after collection (it never is in a plain run)
        request.config.stash[QUICK_TOY_RUN] = QuickToyRun()
    return request.config.stash[QUICK_TOY_RUN].wait()
