"""The shipped toy model dubs a generated talking character through the real video workflow.

The pack's example workflow runs over HTTP on a real ComfyUI with its face node swapped for
SayAnything Load Face Track (the character's known track, as a user would give a track mediapipe
cannot find), the character's video uploaded as mp4 and a new sentence as wav (the same prompt
``tools/toy_proof.py`` builds). The saved mp4 is decoded and the mouth measured from its pixels.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lipsync_core.inference import write_video
from lipsync_core.metrics import pearson
from lipsync_core.toy.demo import DEMO_MODEL
from lipsync_core.toy.measure import measure_opening
from lipsync_core.toy.proof import dub_cases
from tools.demo_assets import WHISPER_FOLDER
from tools.toy_proof import read_mp4, workflow_prompt, write_wav

pytestmark = pytest.mark.comfy

MODEL = "sayanything_toy_dub_test.safetensors"


def test_toy_model_dubs_a_talking_character_through_the_video_workflow(comfy_server, comfy, whisper_tiny_dir):
    import torch

    from lipsync_core.audio import Audio

    base = comfy_server.base
    (base / "models" / "sayanything").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_MODEL, base / "models" / "sayanything" / MODEL)
    shutil.copytree(whisper_tiny_dir, base / "models" / "whisper" / WHISPER_FOLDER, dirs_exist_ok=True)
    case = dub_cases(seed=5, count=2, max_frames=50)[0]
    write_video(base / "input" / "toy_source.mp4", torch.from_numpy(case.video).float() / 255.0, 25.0,
                Audio(torch.from_numpy(case.source_audio), 16000))
    write_wav(base / "input" / "toy_speech.wav", case.speech)
    write_wav(base / "input" / "toy_silence.wav", np.zeros_like(case.speech))
    case.face_track().save(base / "input" / "toy_track.npz")
    object_info = comfy.object_info()

    measured = {}
    for kind in ("speech", "silence"):
        prompt = workflow_prompt(object_info, "toy_source.mp4", f"toy_{kind}.wav", "toy_track.npz", MODEL,
                                 f"toy_dub_{kind}")
        result = comfy.run(prompt, timeout=1800)
        assert result.status == "success", result.error
        (video,) = [p for p in comfy.output_files(result.prompt_id, base) if p.suffix == ".mp4"]
        frames = read_mp4(video)
        assert frames.shape == case.video.shape
        measured[kind] = measure_opening(frames, case.landmarks)
    speech = ~case.silent
    # The mouth follows the new sentence, not the source's own mouth, and stays shut in silence
    # however the source talks.
    assert pearson(measured["speech"][speech], case.opening[speech]) > 0.6
    assert pearson(measured["speech"][speech], case.source_opening[speech]) < 0.4
    assert (case.source_opening >= 0.15).mean() > 0.3  # the source does talk
    assert (measured["silence"] >= 0.15).mean() < 0.1
