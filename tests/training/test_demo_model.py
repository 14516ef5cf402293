"""The shipped toy model dubs a generated talking character with a new sentence (the README demo's
model and command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av

from lipsync_core.checkpoint import read_model_defaults
from lipsync_core.metrics import pearson
from lipsync_core.toy.demo import DEMO_MODEL, demo_lipsync
from lipsync_core.toy.measure import measure_opening
from lipsync_core.toy.run import ToyRunConfig

REPO = Path(__file__).resolve().parents[2]


def test_demo_model_lip_syncs_a_new_character(whisper_tiny_dir):
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size < 20 * 2**20
    # The file says how to run it: what the toy run trained and evaluated it with.
    defaults = read_model_defaults(DEMO_MODEL)
    assert (defaults.crop_size, defaults.window, defaults.noise_aug_strength, defaults.mask_hold) == (64, 8, 0.0, 0.5)
    assert defaults.motion_guidance == ToyRunConfig().motion_guidance  # what its motion figures were measured at
    assert defaults.style_audio_guidance == ToyRunConfig().style_audio_guidance  # and its style figures
    # Through dubbing.lipsync at those defaults, with the character's known track.
    frames, case = demo_lipsync(whisper_tiny_dir)
    measured = measure_opening((frames * 255).round().byte().numpy(), case.landmarks)
    speech = ~case.silent
    assert pearson(measured[speech], case.opening[speech]) > 0.6  # follows the new sentence
    assert pearson(measured[speech], case.source_opening[speech]) < 0.3  # not the source's own mouth
    assert (case.source_opening[case.silent] >= 0.15).mean() > 0.3  # the source talks in the new silences
    assert (measured[case.silent] >= 0.15).mean() < 0.1  # the output does not


def test_toy_demo_command_writes_a_talking_video(tmp_path, whisper_tiny_dir):
    done = subprocess.run([sys.executable, "-m", "lipsync_core", "toy", str(tmp_path), "--demo",
                           "--whisper", str(whisper_tiny_dir)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "demo.mp4"
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (640, 320)  # source | dubbed
        frames = sum(1 for _ in container.decode(video))
        audio_seconds = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
    assert abs(audio_seconds - frames / 25) < 0.08
    assert "denoising" in done.stderr
