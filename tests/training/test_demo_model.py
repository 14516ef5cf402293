"""The shipped toy model makes a generated character talk (the README demo's model and command)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av

from lipsync_core.toy.demo import DEMO_MODEL, demo_lipsync
from lipsync_core.toy.measure import measure_opening, pearson
from lipsync_core.toy.speech import mouth_targets

REPO = Path(__file__).resolve().parents[2]


def test_demo_model_lip_syncs_a_new_character(whisper_tiny_dir):
    assert DEMO_MODEL.is_file() and DEMO_MODEL.stat().st_size < 20 * 2**20
    # Through inference.lipsync, as `toy --demo` and the nodes run it, with the character's known track.
    frames, track, audio = demo_lipsync(whisper_tiny_dir)
    generated = (frames * 255).round().byte().numpy()
    measured = measure_opening(generated, track.landmarks)
    target, _ = mouth_targets(audio.waveform.numpy(), len(frames), 25.0)
    assert pearson(measured, target) > 0.6
    assert measured[target > 0.5].mean() > 3 * max(measured[target == 0].mean(), 0.02)  # opens with speech


def test_toy_demo_command_writes_a_talking_video(tmp_path, whisper_tiny_dir):
    done = subprocess.run([sys.executable, "-m", "lipsync_core", "toy", str(tmp_path), "--demo",
                           "--whisper", str(whisper_tiny_dir)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "demo.mp4"
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (256, 256)
        frames = sum(1 for _ in container.decode(video))
        audio_seconds = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
    assert abs(audio_seconds - frames / 25) < 0.08
    assert "denoising" in done.stderr
