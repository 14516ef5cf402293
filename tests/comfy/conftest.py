"""A real ComfyUI 0.3.75 server for the whole session, with this pack in custom_nodes.

The server runs on a temporary base directory (models, input, output, user) so nothing is written
into the ComfyUI folder or the checkout. Tests that need models write them into
``comfy_base / "models" / <folder>`` (ComfyUI re-lists a model folder when its mtime changes).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.workflows import MOUTH_BOX, TEST_MODEL, TEST_SVD, VIDEO_FPS, VIDEO_FRAMES
from tools.comfy_client import ComfyClient, ComfyServer
from tools.demo_assets import (
    MASKED_PORTRAIT_FILE,
    PORTRAIT_FILE,
    SPEECH_FILE,
    VIDEO_FILE,
    WHISPER_FOLDER,
    install_default_model,
    install_motion_model,
)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("comfy_base")


@pytest.fixture(scope="session")
def comfy_server(comfy_base):
    server = ComfyServer(comfy_base).start()
    yield server
    server.stop()
    if server.process.returncode not in (0, -15, None):
        print(server.log_tail(), file=sys.stderr)


@pytest.fixture
def comfy(comfy_server):
    """A client of the session's server; fails the test if the server died during it."""
    client = ComfyClient(comfy_server.url)
    yield client
    client.close()
    assert comfy_server.alive(), f"ComfyUI died:\n{comfy_server.log_tail()}"


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return ComfyClient(comfy_server.url).object_info()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def comfy_models(comfy_base, whisper_tiny_dir):
    from lipsync_core.checkpoint import save_checkpoint
    from lipsync_core.configs import SayAnythingConfig
    from lipsync_core.models import SayAnythingModel
    from tests.support.svd import write_tiny_svd_checkpoint

    models = comfy_base / "models"
    torch.manual_seed(1)
    save_checkpoint(models / "sayanything" / TEST_MODEL, SayAnythingModel(SayAnythingConfig.preset("tiny")))
    write_tiny_svd_checkpoint(models / "checkpoints" / TEST_SVD)
    install_default_model(models)
    install_motion_model(models)
    (models / "whisper").mkdir(parents=True, exist_ok=True)
    shutil.copytree(whisper_tiny_dir, models / "whisper" / WHISPER_FOLDER, dirs_exist_ok=True)
    return models


@pytest.fixture(scope="session")
def comfy_inputs(comfy_server, comfy_models, astronaut, speech_wav, tmp_path_factory):
    """The demo inputs, uploaded through /upload/image like the frontend does."""
    from lipsync_core.audio import load_audio
    from lipsync_core.inference import write_video
    from tools.comfy_client import ComfyClient

    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(astronaut).save(folder / PORTRAIT_FILE)
    alpha = np.full(astronaut.shape[:2], 255, np.uint8)
    alpha[MOUTH_BOX] = 0
    Image.fromarray(np.dstack([astronaut, alpha]), "RGBA").save(folder / MASKED_PORTRAIT_FILE)
    shutil.copy(speech_wav, folder / SPEECH_FILE)
    # A short clip: the portrait sliding sideways, at VIDEO_FPS, with the speech as its own sound.
    frames = np.stack([np.roll(astronaut, 3 * i, axis=1) for i in range(VIDEO_FRAMES)])
    write_video(folder / VIDEO_FILE, torch.from_numpy(frames).float() / 255.0, VIDEO_FPS, load_audio(speech_wav))
    client = ComfyClient(comfy_server.url)
    for name in (PORTRAIT_FILE, MASKED_PORTRAIT_FILE, SPEECH_FILE, VIDEO_FILE):
        assert client.upload(folder / name) == name
    return {"frames": frames, "speech": load_audio(speech_wav)}
