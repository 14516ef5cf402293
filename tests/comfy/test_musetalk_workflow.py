"""workflows/musetalk_video_lipsync.json through a real ComfyUI, as shipped, on a MuseTalk set in the folders the
README names: a tiny random UNet in upstream's layout (models/musetalk/musetalkV15/unet.pth + musetalk.json), a
tiny SD-shaped VAE in the original single-file layout (models/vae/vae-ft-mse-840000-ema-pruned.safetensors) and a
random multilingual Whisper tiny (models/whisper/openai-whisper-tiny: the real openai/whisper-tiny is not
available offline; the session's real tiny.en is, and MuseTalk refuses it)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.support import musetalk as support
from tests.support.workflows import REPO, VIDEO_FPS, VIDEO_FRAMES, node_id, probe_mp4, run_ok, saved_mp4
from tools.comfy_client import load_workflow, workflow_to_api
from tools.demo_assets import MUSETALK_WHISPER_FOLDER, VIDEO_FILE, WHISPER_FOLDER

pytestmark = pytest.mark.comfy

WORKFLOW = REPO / "workflows" / "musetalk_video_lipsync.json"
NO_FACE = (3, 4)


@pytest.fixture(scope="module")
def musetalk_models(comfy_models):
    return support.write_musetalk_models(comfy_models, whisper_name=MUSETALK_WHISPER_FOLDER)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_musetalk_workflow_as_shipped(comfy, comfy_base, comfy_inputs, musetalk_models, object_info):
    workflow = load_workflow(WORKFLOW)
    prompt = workflow_to_api(workflow, object_info)
    result = run_ok(comfy, prompt, workflow)

    speech = comfy_inputs["speech"]
    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["fps"] == VIDEO_FPS
    assert abs(info["frames"] - speech.duration * VIDEO_FPS) <= 1  # the clip looped to the speech
    assert info["audio_seconds"] == pytest.approx(info["frames"] / VIDEO_FPS, abs=0.07)
    lipsync = node_id(prompt, "SayAnythingLipSyncVideo")
    events = [e for e in result.progress_events() if e["node"] == lipsync]
    assert events and events[-1]["value"] == events[-1]["max"]


def test_musetalk_workflow_passes_frames_without_a_face(comfy, comfy_base, comfy_inputs, musetalk_models,
                                                        object_info, tmp_path):
    from lipsync_core.inference import write_video

    source = _frames(comfy_base / "input" / VIDEO_FILE)
    source[list(NO_FACE)] = 128
    clip = write_video(tmp_path / "musetalk_gaps.mp4", torch.from_numpy(source).float() / 255, VIDEO_FPS,
                       comfy_inputs["speech"], crf=0)
    comfy.upload(Path(clip))
    source = _frames(Path(clip))  # what the server decodes
    workflow = load_workflow(WORKFLOW)
    prompt = workflow_to_api(workflow, object_info)
    prompt[node_id(prompt, "LoadVideo")]["inputs"]["file"] = "musetalk_gaps.mp4"
    prompt[node_id(prompt, "SayAnythingLipSyncVideo")]["inputs"].update(fit="cut", crf=0.0)
    result = run_ok(comfy, prompt, workflow)
    out = _frames(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert len(out) == VIDEO_FRAMES
    difference = np.abs(out.astype(int) - source.astype(int)).mean(axis=(1, 2, 3))
    # Save Video encodes once more (lossy): faceless frames come back as they were, up to that encoding; the
    # others carry the (untrained) model's mouth region.
    assert all(difference[i] < 1.0 for i in NO_FACE), difference
    assert all(difference[i] > 2 * max(difference[j] for j in NO_FACE) for i in range(VIDEO_FRAMES)
               if i not in NO_FACE), difference


def test_musetalk_refuses_a_wrong_pairing_and_tiny_en(comfy, comfy_inputs, musetalk_models, object_info):
    workflow = load_workflow(WORKFLOW)
    prompt = workflow_to_api(workflow, object_info)
    loader = node_id(prompt, "SayAnythingModelLoader")
    prompt[loader]["inputs"]["svd_checkpoint"] = "(VAE inside the SayAnything file)"
    result = comfy.run(prompt, workflow)
    assert result.status == "error" and result.error["node_type"] == "SayAnythingModelLoader"
    assert "unet.pth is a MuseTalk 1.5 UNet, which holds no VAE" in result.error["exception_message"]
    assert "vae-ft-mse-840000-ema-pruned.safetensors" in result.error["exception_message"]

    prompt = workflow_to_api(workflow, object_info)
    prompt[node_id(prompt, "SayAnythingWhisperLoader")]["inputs"]["model"] = WHISPER_FOLDER  # tiny.en
    result = comfy.run(prompt, workflow)
    assert result.status == "error" and result.error["node_type"] == "SayAnythingLipSyncVideo"
    assert "English-only Whisper tiny.en" in result.error["exception_message"]
