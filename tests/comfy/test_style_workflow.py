"""The speaking-style workflow over HTTP on a real ComfyUI: a reference clip of the speaker with its
own sound -> SayAnything Style Reference -> the Sampler's style; and the node's errors for bad references.
(The frontend test loads the workflow in the real web UI with the others.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.comfy.test_workflows_run import add_png_taps, assert_unchanged_outside_mask, read_taps
from tests.support.style import write_plain_model, write_style_model
from tests.support.workflows import VIDEO_FPS, VIDEO_FRAMES, node_id, probe_mp4, prompt_for, run_ok, saved_mp4

pytestmark = pytest.mark.comfy

WORKFLOW = "sayanything_style_reference.json"
STYLE_MODEL = "sayanything_style_test.safetensors"
PLAIN_MODEL = "sayanything_plain_test.safetensors"


@pytest.fixture(scope="module")
def style_model_name(comfy_models) -> str:
    """The model the style workflow runs with: the shipped model with a live (random) style output layer, since
    the shipped one barely steers the lips yet (tests.support.style)."""
    write_style_model(comfy_models / "sayanything" / STYLE_MODEL)
    return STYLE_MODEL


@pytest.fixture(scope="module")
def plain_model_name(comfy_models) -> str:
    write_plain_model(comfy_models / "sayanything" / PLAIN_MODEL)
    return PLAIN_MODEL


def style_prompt(object_info: dict, model: str) -> tuple[dict, dict, str]:
    """The style workflow's prompt on the test inputs (2 s of speech for the 2 s clip), and the id of the Load
    Video node that holds the style reference."""
    prompt, workflow = prompt_for(WORKFLOW, object_info, {
        "SayAnythingModelLoader": {"model": model}, "SayAnythingLoadAudio": {"duration": VIDEO_FRAMES / VIDEO_FPS}})
    parts = prompt[node_id(prompt, "SayAnythingStyleReference")]["inputs"]["images"][0]
    return prompt, workflow, prompt[parts]["inputs"]["video"][0]


def test_style_workflow_runs_and_the_style_steers_the_lips(comfy, comfy_base, comfy_inputs, object_info,
                                                           style_model_name):
    prompt, workflow, _reference = style_prompt(object_info, style_model_name)
    sampler, style = node_id(prompt, "SayAnythingSampler"), node_id(prompt, "SayAnythingStyleReference")
    assert prompt[sampler]["inputs"]["style"] == [style, 0] and prompt[sampler]["inputs"]["style_strength"] == 1.0
    taps = {}
    for name, change in [("styled", {}), ("zero", {"style_strength": 0.0}), ("plain", {"style": None})]:
        inputs = {key: value for key, value in {**prompt[sampler]["inputs"], **change}.items() if value is not None}
        variant = {**prompt, sampler: {**prompt[sampler], "inputs": inputs}}
        add_png_taps(variant, name)
        result = run_ok(comfy, variant, workflow)
        taps[name] = read_taps(comfy, result.prompt_id, comfy_base, name)
        if name == "styled":
            info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
            assert info["frames"] == VIDEO_FRAMES and info["fps"] == VIDEO_FPS
            assert [e for e in result.progress_events() if e["node"] == style]  # it tracked the reference
    assert len(taps["styled"]["out"]) == VIDEO_FRAMES
    assert_unchanged_outside_mask(taps["styled"])
    np.testing.assert_array_equal(taps["zero"]["out"], taps["plain"]["out"])  # strength 0 is no style
    inside = taps["styled"]["mask"][..., 0] == 255
    change = np.abs(taps["styled"]["out"].astype(int) - taps["plain"]["out"].astype(int)).max(axis=-1)
    assert change[inside].mean() > 1.0


@pytest.fixture(scope="module")
def bad_references(comfy_server, comfy_inputs, tmp_path_factory) -> dict[str, str]:
    """A reference clip without sound and one too short (0.8 s; the model needs 1.92 s), uploaded."""
    from lipsync_core.audio import Audio
    from lipsync_core.inference import write_video
    from tests.support.media import write_clip
    from tools.comfy_client import ComfyClient

    folder = tmp_path_factory.mktemp("style_references")
    frames = comfy_inputs["frames"]
    speech = comfy_inputs["speech"]
    mute = write_clip(folder / "style_mute.mkv", frames, VIDEO_FPS)
    short = folder / "style_short.mp4"
    write_video(short, torch.from_numpy(frames[:4]).float() / 255.0, VIDEO_FPS,
                Audio(speech.waveform[: int(0.8 * speech.sample_rate)], speech.sample_rate))
    client = ComfyClient(comfy_server.url)
    return {"mute": client.upload(Path(mute)), "short": client.upload(short)}


@pytest.mark.parametrize("case, message", [
    ("mute", "has no sound: it needs the speaker talking"),
    ("short", "0.80 s long (4 frames at 5 fps); this model needs at least 1.92 s of the speaker talking"),
    ("plain_model", "This model has no speaking-style input"),
])
def test_bad_references_stop_at_the_style_node_with_a_clear_message(
        comfy, comfy_inputs, object_info, style_model_name, plain_model_name, bad_references, case, message):
    prompt, workflow, reference = style_prompt(object_info, plain_model_name if case == "plain_model"
                                               else style_model_name)
    if case in bad_references:
        prompt[reference]["inputs"]["file"] = bad_references[case]
    result = comfy.run(prompt, workflow)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingStyleReference"
    assert message in result.error["exception_message"]


def test_lip_sync_video_takes_the_style(comfy, comfy_base, comfy_inputs, object_info, style_model_name):
    from tests.comfy.test_workflows_run import long_video_prompt
    from tests.support.media import probe
    from tools.demo_assets import VIDEO_FILE

    prompt, workflow = long_video_prompt(object_info, steps=2)
    prompt[node_id(prompt, "SayAnythingModelLoader")]["inputs"]["model"] = style_model_name
    lipsync = node_id(prompt, "SayAnythingLipSyncVideo")
    whisper, model = (prompt[lipsync]["inputs"][name] for name in ("whisper", "model"))
    prompt["reference"] = {"class_type": "LoadVideo", "inputs": {"file": VIDEO_FILE}}
    prompt["reference_parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["reference", 0]}}
    prompt["style"] = {"class_type": "SayAnythingStyleReference", "inputs": {
        "model": model, "whisper": whisper, "images": ["reference_parts", 0], "audio": ["reference_parts", 1],
        "fps": ["reference_parts", 2], "face": "largest", "face_index": 0}}
    pixels = {}
    for strength in (1.0, 0.0):
        prompt[lipsync]["inputs"].update(style=["style", 0], style_strength=strength)
        result = run_ok(comfy, prompt, workflow)
        pixels[strength] = probe(saved_mp4(comfy, result.prompt_id, comfy_base))["pixels"]
    del prompt[lipsync]["inputs"]["style"]
    result = run_ok(comfy, prompt, workflow)
    plain = probe(saved_mp4(comfy, result.prompt_id, comfy_base))["pixels"]
    np.testing.assert_array_equal(pixels[0.0], plain)
    assert not np.array_equal(pixels[1.0], plain)
