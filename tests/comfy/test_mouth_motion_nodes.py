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
def motion_models(comfy_models):
    """An untrained Mouth Motion from Audio model, and the default model given a zero-initialised motion
    input: these tests check the nodes' plumbing; training is tested elsewhere."""
    import torch

    from lipsync_core.checkpoint import load_checkpoint, save_checkpoint
    from lipsync_core.models.mouth_motion import AudioToMouthMotion, MouthMotionConfig, save_mouth_motion_model
    from lipsync_core.motion import add_motion_input
    from tools.demo_assets import DEFAULT_MODEL_FILE

    torch.manual_seed(0)
    save_mouth_motion_model(comfy_models / "sayanything_motion" / "motion_test.safetensors",
                            AudioToMouthMotion(MouthMotionConfig(hidden_dim=32, temporal_layers=1)))
    base, vae = load_checkpoint(comfy_models / "sayanything" / DEFAULT_MODEL_FILE)
    save_checkpoint(comfy_models / "sayanything" / "toy_motion_input.safetensors", add_motion_input(base), vae=vae)
    return "motion_test.safetensors", "toy_motion_input.safetensors"


def test_motion_from_audio_node(comfy, comfy_base, comfy_inputs, motion_models, object_info):
    assert motion_models[0] in str(comfy.object_info()["SayAnythingMouthMotionFromAudio"])
    prompt = {
        "speech": {"class_type": "SayAnythingLoadAudio", "inputs": {"audio": SPEECH_FILE, "start": 0.0,
                                                                    "duration": 0.0}},
        "whisper": {"class_type": "SayAnythingWhisperLoader",
                    "inputs": {"model": WHISPER_FOLDER, "precision": "fp32", "device": "cpu"}},
        "portrait": {"class_type": "LoadImage", "inputs": {"image": PORTRAIT_FILE}},
        "target": {"class_type": "SayAnythingFaceMask", "inputs": {"images": ["portrait", 0], **FACE_MASK}},
        "motion": {"class_type": "SayAnythingMouthMotionFromAudio",
                   "inputs": {"model": motion_models[0], "whisper": ["whisper", 0], "audio": ["speech", 0],
                              "fps": 12.0, "frame_count": 0, "target_track": ["target", 1]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["motion", 1], "filename_prefix": "motion_audio"}},
    }
    result = run_ok(comfy, prompt)
    (path,) = comfy.output_files(result.prompt_id, comfy_base)
    assert np.asarray(Image.open(path)).shape[:2] == (320, 768)


def test_exaggerated_audio_motion_into_the_sampler(comfy, comfy_base, comfy_inputs, motion_models, object_info):
    """Talking still + Mouth Motion from Audio -> Edit (gain 1.5) -> the Sampler's mouth_motion. The model's
    motion input is zero-initialised, so the frames must equal the same graph without the motion."""
    from tests.support.workflows import node_id, prompt_for

    prompt, _ = prompt_for("sayanything_talking_image.json", object_info, {
        "PrimitiveFloat": {"value": 4.0}, "SayAnythingModelLoader": {"model": motion_models[1]}})
    fit, face, whisper, sampler, paste = (node_id(prompt, kind) for kind in (
        "SayAnythingFitAudioToVideo", "SayAnythingFaceMask", "SayAnythingWhisperLoader", "SayAnythingSampler",
        "SayAnythingFacePaste"))
    fps = node_id(prompt, "PrimitiveFloat")
    prompt["tap"] = {"class_type": "SaveImage", "inputs": {"images": [paste, 0], "filename_prefix": "plain"}}
    plain = run_ok(comfy, prompt)
    prompt["motion"] = {"class_type": "SayAnythingMouthMotionFromAudio",
                        "inputs": {"model": motion_models[0], "whisper": [whisper, 0], "audio": [fit, 1],
                                   "fps": [fps, 0], "frame_count": [fit, 2], "target_track": [face, 1]}}
    prompt["louder"] = {"class_type": "SayAnythingMouthMotionEdit",
                        "inputs": {"motion": ["motion", 0], "gain": 1.5, "smoothing": 0.0, "width_bias": 0.0,
                                   "shift": 0.0}}
    prompt[sampler]["inputs"]["mouth_motion"] = ["louder", 0]
    prompt["tap"]["inputs"]["filename_prefix"] = "driven"
    driven = run_ok(comfy, prompt)

    def frames(result, prefix):
        paths = sorted(p for p in comfy.output_files(result.prompt_id, comfy_base) if p.name.startswith(prefix))
        return np.stack([np.asarray(Image.open(p)) for p in paths])

    a, b = frames(plain, "plain"), frames(driven, "driven")
    assert len(a) > 1
    np.testing.assert_array_equal(a, b)
