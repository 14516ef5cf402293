"""The mouth-motion example workflows run over HTTP by a real ComfyUI, and the Lip Sync Video
node's mouth_motion input.

SayAnything model: the shipped demo model once it has a mouth-motion input, until then a copy given one
(tests.support.motion). Mouth Motion from Audio model: none ships, so a small untrained one is written
under the name the workflow uses (its prediction is arbitrary, but it is a motion that must reach the
sampler). Driving video: the test portrait with its jaw moving with the speech
(tools.demo_assets.talking_portrait, as start.sh makes it), as long as the target clip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.media import probe
from tests.support.motion import motion_model
from tests.support.workflows import (
    MOUTH_BOX,
    REPO,
    TEST_MODEL,
    TEST_SVD,
    VIDEO_FPS,
    VIDEO_FRAMES,
    add_png_taps,
    assert_unchanged_outside_mask,
    node_id,
    probe_mp4,
    prompt_for,
    read_taps,
    run_ok,
    saved_mp4,
)
from tools.comfy_client import load_workflow, workflow_to_api
from tools.demo_assets import DEFAULT_MODEL_FILE, DRIVING_VIDEO_FILE, MOTION_MODEL_FILE

pytestmark = pytest.mark.comfy

SHORT_DRIVING = "driving_short.mp4"  # 4 frames: shorter than the 10-frame target
PLOT_SHAPE = (320, 768)  # motion.plot_motion's picture


@pytest.fixture(scope="module")
def motion_inputs(comfy_server, comfy_models, comfy_inputs, astronaut, tmp_path_factory):
    from lipsync_core.inference import write_video
    from lipsync_core.models.mouth_motion import AudioToMouthMotion, MouthMotionConfig, save_mouth_motion_model
    from tools.comfy_client import ComfyClient
    from tools.demo_assets import talking_portrait

    model = motion_model(comfy_models / "sayanything" / DEFAULT_MODEL_FILE)
    audio_model = comfy_models / "sayanything_motion" / MOTION_MODEL_FILE
    if not audio_model.exists():
        torch.manual_seed(0)
        save_mouth_motion_model(audio_model, AudioToMouthMotion(MouthMotionConfig(hidden_dim=32, temporal_layers=1)))
    folder = tmp_path_factory.mktemp("driving")
    frames = talking_portrait(astronaut, comfy_inputs["speech"].waveform.numpy(), VIDEO_FRAMES, VIDEO_FPS)
    assert np.abs(frames[:, MOUTH_BOX[0]].astype(int) - astronaut[MOUTH_BOX[0]]).max() > 60  # the jaw moves
    client = ComfyClient(comfy_server.url)
    for name, clip in ((DRIVING_VIDEO_FILE, frames), (SHORT_DRIVING, frames[:4])):
        write_video(folder / name, torch.from_numpy(clip).float() / 255.0, VIDEO_FPS)
        assert client.upload(folder / name) == name
    return {"model": model.name}


def differs_only_inside_the_mask(a: dict, b: dict) -> float:
    """Mean difference of two runs' result frames inside the mask (outside they must be equal)."""
    import cv2

    mask = a["mask"][..., 0]
    outside = np.stack([cv2.dilate(m, np.ones((25, 25), np.uint8)) for m in mask]) == 0
    np.testing.assert_array_equal(a["out"][outside], b["out"][outside])
    return float(np.abs(a["out"].astype(int) - b["out"].astype(int))[mask == 255].mean())


def saved_plot(comfy, prompt_id: str, base, node: str) -> np.ndarray:
    (item,) = comfy.history(prompt_id)["outputs"][node]["images"]
    return np.asarray(Image.open(base / item["type"] / item["subfolder"] / item["filename"]).convert("RGB"))


# -- sayanything_reenact_mouth.json


def reenact_prompt(object_info: dict, model: str, driving: str = DRIVING_VIDEO_FILE, **loader):
    prompt, workflow = prompt_for("sayanything_reenact_mouth.json", object_info,
                                  {"SayAnythingModelLoader": {"model": model, **loader}})
    (load,) = [n for n in prompt.values()
               if n["class_type"] == "LoadVideo" and n["inputs"]["file"] == DRIVING_VIDEO_FILE]
    load["inputs"]["file"] = driving
    return prompt, workflow


def test_reenact_mouth_workflow(comfy, comfy_base, comfy_inputs, motion_inputs, object_info):
    prompt, workflow = reenact_prompt(object_info, motion_inputs["model"])
    sampler, motion = node_id(prompt, "SayAnythingSampler"), node_id(prompt, "SayAnythingMouthMotionFromVideo")
    assert prompt[sampler]["inputs"]["mouth_motion"] == [motion, 0]
    add_png_taps(prompt, "reenact")
    result = run_ok(comfy, prompt, workflow)

    # The target clip with its own sound: 10 frames at its fps, 2 s of audio.
    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["frames"] == VIDEO_FRAMES and info["fps"] == VIDEO_FPS
    assert info["audio_seconds"] == pytest.approx(VIDEO_FRAMES / VIDEO_FPS, abs=0.07)
    driven = read_taps(comfy, result.prompt_id, comfy_base, "reenact")
    assert len(driven["out"]) == VIDEO_FRAMES
    assert_unchanged_outside_mask(driven)
    plot_node = next(k for k, n in prompt.items() if n["class_type"] == "PreviewImage"
                     and n["inputs"]["images"] == [motion, 1])
    assert saved_plot(comfy, result.prompt_id, comfy_base, plot_node).shape[:2] == PLOT_SHAPE

    # The same graph without the motion: the mouth region changes, nothing else does.
    del prompt[sampler]["inputs"]["mouth_motion"]
    add_png_taps(prompt, "reenact_plain")
    plain = read_taps(comfy, run_ok(comfy, prompt, workflow).prompt_id, comfy_base, "reenact_plain")
    assert differs_only_inside_the_mask(driven, plain) > 1.0


def test_reenactment_refuses_a_driving_video_of_another_length(comfy, comfy_inputs, motion_inputs, object_info):
    prompt, workflow = reenact_prompt(object_info, motion_inputs["model"], driving=SHORT_DRIVING)
    result = comfy.run(prompt, workflow)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingSampler"
    message = result.error["exception_message"]
    assert "The mouth motion lasts 0.80 s" in message and "the video has 10 frames" in message


def test_reenactment_refuses_a_model_without_a_motion_input(comfy, comfy_inputs, motion_inputs, object_info):
    prompt, workflow = reenact_prompt(object_info, TEST_MODEL, svd_checkpoint=TEST_SVD)
    result = comfy.run(prompt, workflow)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingSampler"
    assert "has no mouth-motion input" in result.error["exception_message"]


# -- sayanything_exaggerate_motion.json


def test_exaggerate_motion_workflow(comfy, comfy_base, comfy_inputs, motion_inputs, object_info):
    prompt, workflow = prompt_for("sayanything_exaggerate_motion.json", object_info, {
        "SayAnythingModelLoader": {"model": motion_inputs["model"]},
        "SayAnythingLoadAudio": {"duration": VIDEO_FRAMES / VIDEO_FPS},
    })
    sampler, edit = node_id(prompt, "SayAnythingSampler"), node_id(prompt, "SayAnythingMouthMotionEdit")
    from_audio = node_id(prompt, "SayAnythingMouthMotionFromAudio")
    preview = node_id(prompt, "SayAnythingMouthMotionPreview")
    assert prompt[from_audio]["inputs"]["model"] == MOTION_MODEL_FILE
    assert prompt[edit]["inputs"]["gain"] == 1.5 and prompt[edit]["inputs"]["motion"] == [from_audio, 0]
    assert prompt[sampler]["inputs"]["mouth_motion"] == [edit, 0]
    add_png_taps(prompt, "louder")
    result = run_ok(comfy, prompt, workflow)

    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["frames"] == VIDEO_FRAMES and info["fps"] == VIDEO_FPS
    assert info["audio_seconds"] == pytest.approx(VIDEO_FRAMES / VIDEO_FPS, abs=0.07)
    louder = read_taps(comfy, result.prompt_id, comfy_base, "louder")
    assert_unchanged_outside_mask(louder)
    show = next(k for k, n in prompt.items()
                if n["class_type"] == "PreviewImage" and n["inputs"]["images"] == [preview, 0])
    plot = saved_plot(comfy, result.prompt_id, comfy_base, show)
    assert plot.shape[:2] == PLOT_SHAPE and (plot.std(axis=2) > 40).sum() > 300  # curves drawn

    # Gain 1 instead of 1.5: the sampler gets another motion and the mouth region changes.
    prompt[edit]["inputs"]["gain"] = 1.0
    add_png_taps(prompt, "gain1")
    gain1 = read_taps(comfy, run_ok(comfy, prompt, workflow).prompt_id, comfy_base, "gain1")
    assert differs_only_inside_the_mask(louder, gain1) > 1.0


# -- SayAnything Lip Sync Video's mouth_motion


def video_node_prompt(object_info: dict, model: str, driving: str = DRIVING_VIDEO_FILE, prefix: str = "motion_video",
                      **loader) -> tuple[dict, str]:
    """sayanything_long_video.json, cut to the clip's 10 frames, with a driving video's motion on the node."""
    prompt = workflow_to_api(load_workflow(REPO / "workflows" / "sayanything_long_video.json"), object_info)
    lipsync = node_id(prompt, "SayAnythingLipSyncVideo")
    prompt[lipsync]["inputs"].update(steps=2, fit="cut")
    prompt[node_id(prompt, "SayAnythingModelLoader")]["inputs"].update(model=model, **loader)
    prompt[node_id(prompt, "SaveVideo")]["inputs"]["filename_prefix"] = f"video/{prefix}"
    prompt["driving"] = {"class_type": "LoadVideo", "inputs": {"file": driving}}
    prompt["driving_parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["driving", 0]}}
    prompt["motion"] = {"class_type": "SayAnythingMouthMotionFromVideo", "inputs": {
        "images": ["driving_parts", 0], "fps": ["driving_parts", 2], "face": "largest", "face_index": 0}}
    prompt[lipsync]["inputs"]["mouth_motion"] = ["motion", 0]
    return prompt, lipsync


def test_video_node_follows_a_mouth_motion(comfy, comfy_base, comfy_inputs, motion_inputs, object_info):
    prompt, lipsync = video_node_prompt(object_info, motion_inputs["model"])
    driven = probe(saved_mp4(comfy, run_ok(comfy, prompt).prompt_id, comfy_base))
    assert driven["frames"] == VIDEO_FRAMES and driven["fps"] == VIDEO_FPS
    assert driven["audio_seconds"] == pytest.approx(VIDEO_FRAMES / VIDEO_FPS, abs=0.07)

    del prompt[lipsync]["inputs"]["mouth_motion"]
    prompt[node_id(prompt, "SaveVideo")]["inputs"]["filename_prefix"] = "video/motion_video_plain"
    plain = probe(saved_mp4(comfy, run_ok(comfy, prompt).prompt_id, comfy_base))
    difference = np.abs(driven["pixels"].astype(int) - plain["pixels"].astype(int)).mean(axis=-1)
    # The motion changes the lower face (the mask: nose to chin) and nothing above the eyes.
    changed = difference.mean(axis=0) > 3
    assert changed.sum() > 200
    assert np.argwhere(changed)[:, 0].min() > 100  # the astronaut's eyes are at row ~110
    assert difference[:, :80].mean() < 0.05


def test_video_node_refuses_a_model_without_a_motion_input_before_tracking(comfy, comfy_inputs, motion_inputs,
                                                                          object_info):
    prompt, lipsync = video_node_prompt(object_info, TEST_MODEL, svd_checkpoint=TEST_SVD)
    result = comfy.run(prompt)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingLipSyncVideo"
    assert "has no mouth-motion input" in result.error["exception_message"]
    assert not [e for e in result.progress_events() if e["node"] == lipsync]  # it did not start tracking


def test_video_node_refuses_a_motion_of_another_length(comfy, comfy_inputs, motion_inputs, object_info):
    prompt, _ = video_node_prompt(object_info, motion_inputs["model"], driving=SHORT_DRIVING)
    result = comfy.run(prompt)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingLipSyncVideo"
    message = result.error["exception_message"]
    assert "The mouth motion lasts 0.80 s" in message and "the video has 10 frames" in message
