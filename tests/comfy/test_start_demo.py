"""The README's main command in its headless form: ``bash tools/start.sh --demo``.

Runs the whole demo (default model, Whisper tiny.en, embedded portrait and espeak sentence, a private
ComfyUI) into a temporary base folder with set-up skipped (this checkout is set up already), and
checks the mp4 it prints. Several minutes on 2 CPU cores, hence slow.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.comfy]

REPO = Path(__file__).resolve().parents[2]


def test_start_demo_prints_a_video(tmp_path):
    env = dict(os.environ, SAYANYTHING_SKIP_SETUP="1", SAYANYTHING_BASE=str(tmp_path))
    done = subprocess.run(["bash", str(REPO / "tools" / "start.sh"), "--demo"], env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("[start] lip-synced video: ")]
    assert len(lines) == 1, done.stdout
    video = Path(lines[0].split(": ", 1)[1])
    assert video.is_file() and video.is_relative_to(tmp_path / "output")
    with av.open(str(video)) as container:
        assert container.streams.video and container.streams.audio
        assert sum(1 for _ in container.decode(container.streams.video[0])) > 25
    # The example workflows are in the user's Workflows sidebar, and a second run keeps them.
    saved = sorted(p.name for p in (tmp_path / "user" / "default" / "workflows").glob("*.json"))
    assert saved == sorted(p.name for p in (REPO / "workflows").glob("*.json"))
