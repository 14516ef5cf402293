"""``python -m lipsync_core run``: the nodes' pipeline as a command, on the real portrait and speech."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from lipsync_core.pipeline import plan_windows

REPO = Path(__file__).resolve().parents[1]
FAST = ["--fps", "4", "--crop-size", "64", "--steps", "2", "--window", "4", "--overlap", "1", "--decode-chunk", "4"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from lipsync_core.checkpoint import save_checkpoint
    from lipsync_core.configs import SayAnythingConfig
    from lipsync_core.models import SayAnythingModel
    from tests.support.svd import write_tiny_svd_checkpoint

    folder = tmp_path_factory.mktemp("models")
    model = save_checkpoint(folder / "tiny.safetensors", SayAnythingModel(SayAnythingConfig.preset("tiny")))
    return model, write_tiny_svd_checkpoint(folder / "svd_tiny.safetensors")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipsync_core", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_run_makes_a_talking_still(tmp_path, astronaut, speech_wav, whisper_tiny_dir, tiny_models):
    model, svd = tiny_models
    image = tmp_path / "portrait.png"
    Image.fromarray(astronaut).save(image)
    output = tmp_path / "out.mp4"
    args = ["--video", str(image), "--audio", str(speech_wav), "--model", str(model), "--svd", str(svd),
            "--whisper", str(whisper_tiny_dir), "-o", str(output), *FAST]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(output)

    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert Fraction(video.average_rate) == 4
        frames = sum(1 for _ in container.decode(video))
    with av.open(str(output)) as container:
        rate = container.streams.audio[0].sample_rate
        samples = sum(f.samples for f in container.decode(container.streams.audio[0]))
    assert frames >= 8  # ~2.3 s of speech at 4 fps
    # The progress bar counts every window (4 frames, overlap 1) of both steps.
    window_calls = 2 * len(plan_windows(frames, 4, 1))
    assert "denoising: 100%" in done.stderr and f"{window_calls}/{window_calls}" in done.stderr
    assert samples / rate == pytest.approx(frames / 4, abs=0.07)

    # Nothing the user made is overwritten.
    before = output.stat().st_mtime_ns
    again = run(*args)
    assert again.returncode == 2 and "exists" in again.stderr
    assert output.stat().st_mtime_ns == before


def test_run_explains_bad_input(tmp_path, speech_wav, whisper_tiny_dir, tiny_models, astronaut):
    model, _svd = tiny_models
    image = tmp_path / "portrait.png"
    Image.fromarray(astronaut).save(image)
    # An image needs a frame rate; a model without VAE needs the SVD file.
    done = run("--video", str(image), "--audio", str(speech_wav), "--model", str(model),
               "--whisper", str(whisper_tiny_dir), "-o", str(tmp_path / "x.mp4"))
    assert done.returncode == 2 and "--fps" in done.stderr
    done = run("--video", str(image), "--audio", str(speech_wav), "--model", str(model),
               "--whisper", str(whisper_tiny_dir), "-o", str(tmp_path / "x.mp4"), *FAST)
    assert done.returncode == 2 and "svd_xt.safetensors" in done.stderr
    assert not (tmp_path / "x.mp4").exists()
