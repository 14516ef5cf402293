"""The mouth-motion nodes in a real ComfyUI: driving video -> motion (retargeted) -> edit -> preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.support.workflows import run_ok
from tools.demo_assets import PORTRAIT_FILE, SPEECH_FILE, VIDEO_FILE, WHISPER_FOLDER

pytestmark = pytest.mark.comfy

FACE_MASK = {"fps": 25.0, "face": "largest", "face_index": 0, "upper_edge": "nose", "expand": 0.08,
             "feather": 0.06}


def _prompt(other: str) -> dict:
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": VIDEO_FILE}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "portrait": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT_FILE}},
        "target": {"class_type": "SayAnythingFaceMask", "inputs": {"images": ["portrait", 0], **FACE_MASK}},
        "driving": {"class_type": "SayAnythingMouthMotionFromVideo",
                    "inputs": {"images": ["parts", 0], "fps": ["parts", 2], "face": "largest", "face_index": 0,
                               "target_track": ["target", 1]}},
        "still": {"class_type": "SayAnythingMouthMotionFromVideo",
                  "inputs": {"images": ["portrait", 0], "fps": 25.0, "face": "largest", "face_index": 0}},
        "edit": {"class_type": "SayAnythingMouthMotionEdit",
                 "inputs": {"motion": ["driving", 0], "gain": 1.5, "smoothing": 1.0, "width_bias": 0.1, "shift": 2.0,
                            "other": [other, 0], "blend": 0.5}},
        "plot": {"class_type": "SayAnythingMouthMotionPreview",
                 "inputs": {"motion": ["edit", 0], "compare": ["driving", 0]}},
        "save_plot": {"class_type": "SaveImage", "inputs": {"images": ["plot", 0], "filename_prefix": "motion_plot"}},
        "save_edit": {"class_type": "SaveImage", "inputs": {"images": ["edit", 1], "filename_prefix": "motion_edit"}},
    }


def test_motion_nodes_run_and_plot(comfy, comfy_base, comfy_inputs, object_info):
    result = run_ok(comfy, _prompt(other="driving"))
    files = comfy.output_files(result.prompt_id, comfy_base)
    assert len(files) == 2
    for path in files:
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape == (320, 768, 3)
        assert (image.std(axis=2) > 40).sum() > 300  # coloured curves drawn on the grey plot


def test_blending_motions_of_different_lengths_is_a_clear_error(comfy, comfy_inputs, object_info):
    # the still portrait gives a 1-frame motion; the driving clip has 10 frames at 5 fps
    result = comfy.run(_prompt(other="still"))
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingMouthMotionEdit"
    assert "different lengths: 10 frames and 1 frames" in result.error["exception_message"]


@pytest.fixture(scope="module")
def motion_audio_model(comfy_models):
    """An untrained Mouth Motion from Audio model: this test checks the node's plumbing; training is tested
    elsewhere, and the motion reaching the sampler in test_motion_workflows.py."""
    import torch

    from lipsync_core.models.mouth_motion import AudioToMouthMotion, MouthMotionConfig, save_mouth_motion_model

    torch.manual_seed(0)
    save_mouth_motion_model(comfy_models / "sayanything_motion" / "motion_test.safetensors",
                            AudioToMouthMotion(MouthMotionConfig(hidden_dim=32, temporal_layers=1)))
    return "motion_test.safetensors"


def test_motion_from_audio_node(comfy, comfy_base, comfy_inputs, motion_audio_model, object_info):
    assert motion_audio_model in str(comfy.object_info()["SayAnythingMouthMotionFromAudio"])
    prompt = {
        "speech": {"class_type": "SayAnythingLoadAudio", "inputs": {"audio": SPEECH_FILE, "start": 0.0,
                                                                    "duration": 0.0}},
        "whisper": {"class_type": "SayAnythingWhisperLoader",
                    "inputs": {"model": WHISPER_FOLDER, "precision": "fp32", "device": "cpu"}},
        "portrait": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT_FILE}},
        "target": {"class_type": "SayAnythingFaceMask", "inputs": {"images": ["portrait", 0], **FACE_MASK}},
        "motion": {"class_type": "SayAnythingMouthMotionFromAudio",
                   "inputs": {"model": motion_audio_model, "whisper": ["whisper", 0], "audio": ["speech", 0],
                              "fps": 12.0, "frame_count": 0, "target_track": ["target", 1]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["motion", 1], "filename_prefix": "motion_audio"}},
    }
    result = run_ok(comfy, prompt)
    (path,) = comfy.output_files(result.prompt_id, comfy_base)
    assert np.asarray(Image.open(path)).shape[:2] == (320, 768)
