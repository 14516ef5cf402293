"""Running the example workflows on a test server: the tiny models' names, the fast settings, and
helpers to edit an API prompt, run it and read its mp4."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tools.comfy_client import load_workflow, workflow_to_api

REPO = Path(__file__).resolve().parents[2]
TEST_MODEL = "sayanything_tiny_test.safetensors"
TEST_SVD = "svd_xt_tiny_test.safetensors"
VIDEO_FPS = 5
VIDEO_FRAMES = 10
MOUTH_BOX = (slice(170, 250), slice(150, 290))  # rows, columns of the painted mask in the masked portrait

# The speed preset and the settings under it, last on both sampling nodes (nodes.types.speed_inputs).
SPEED_WIDGETS = ["speed", "guidance_sigma_low", "guidance_sigma_high", "deep_cache", "schedule", "window_batch",
                 "compile"]

# Every node of the pack: (outputs, required inputs in order).
PACK_NODES = {
    "SayAnythingLoadAudio": (["AUDIO"], ["audio", "start", "duration"]),
    "SayAnythingFitAudioToVideo": (["IMAGE", "AUDIO", "INT"], ["images", "audio", "fps", "mode"]),
    "SayAnythingWhisperLoader": (["SAYANYTHING_WHISPER"], ["model", "precision", "device"]),
    "SayAnythingWhisperFeatures": (["SAYANYTHING_WHISPER_FEATURES"],
                                   ["whisper", "audio", "fps", "frame_count", "window"]),
    "SayAnythingFaceMask": (["MASK", "SAYANYTHING_FACE_TRACK", "IMAGE"],
                            ["images", "fps", "face", "face_index", "upper_edge", "expand", "feather"]),
    "SayAnythingLoadFaceTrack": (["MASK", "SAYANYTHING_FACE_TRACK", "IMAGE"],
                                 ["images", "track_file", "fps", "upper_edge", "expand", "feather"]),
    "SayAnythingFaceCrop": (["IMAGE", "MASK", "SAYANYTHING_FACE_CROP"], ["images", "mask", "face_track", "crop_size"]),
    "SayAnythingFacePaste": (["IMAGE"], ["images", "crops", "crop_mask", "face_crop"]),
    "SayAnythingModelLoader": (["SAYANYTHING_MODEL"], ["model", "svd_checkpoint", "precision"]),
    "SayAnythingReferenceEncode": (["SAYANYTHING_ID_FEATURES"], ["model", "reference", "frame_index"]),
    "SayAnythingSampler": (["IMAGE"], ["model", "crops", "crop_mask", "audio_features", "id_features", "fps", "steps",
                                       "seed", "reference_guidance", "audio_guidance", "window", "overlap",
                                       "decode_chunk", *SPEED_WIDGETS]),
    "SayAnythingLipSyncVideo": (["VIDEO"], ["model", "whisper", "video", "audio", "fit", "steps", "seed",
                                            "reference_guidance", "audio_guidance", "crop_size", "upper_edge",
                                            "reference_frame", "crf", *SPEED_WIDGETS]),
    "SayAnythingMouthMotionFromAudio": (["SAYANYTHING_MOUTH_MOTION", "IMAGE"],
                                        ["model", "whisper", "audio", "fps", "frame_count"]),
    "SayAnythingMouthMotionFromVideo": (["SAYANYTHING_MOUTH_MOTION", "IMAGE"],
                                        ["images", "fps", "face", "face_index"]),
    "SayAnythingMouthMotionEdit": (["SAYANYTHING_MOUTH_MOTION", "IMAGE"],
                                   ["motion", "gain", "smoothing", "width_bias", "shift"]),
    "SayAnythingMouthMotionPreview": (["IMAGE"], ["motion"]),
    "SayAnythingStyleReference": (["SAYANYTHING_STYLE"], ["model", "whisper", "images", "audio", "fps", "face",
                                                          "face_index"]),
}

# Small but real: 64 px crops (16x16 latents with the tiny VAE), 2 steps, windows of 4.
FAST = {
    "SayAnythingFaceCrop": {"crop_size": 64},
    "SayAnythingSampler": {"steps": 2, "window": 4, "overlap": 1, "decode_chunk": 4},
}


def prompt_for(workflow_name: str, object_info: dict, settings: dict | None = None) -> tuple[dict, dict]:
    """The API prompt of an example workflow with FAST and ``settings`` ({node type: {input: value}})."""
    workflow = load_workflow(REPO / "workflows" / workflow_name)
    prompt = workflow_to_api(workflow, object_info)
    for node_type, values in {**FAST, **(settings or {})}.items():
        nodes = [node for node in prompt.values() if node["class_type"] == node_type]
        assert nodes, f"{workflow_name} has no {node_type}"
        for node in nodes:
            node["inputs"].update(values)
    return prompt, workflow


def node_id(prompt: dict, class_type: str) -> str:
    (found,) = [key for key, node in prompt.items() if node["class_type"] == class_type]
    return found


def run_ok(comfy, prompt: dict, workflow: dict | None = None, timeout: float = 300):
    result = comfy.run(prompt, workflow, timeout=timeout)
    assert result.status == "success", result.error
    return result


def saved_mp4(comfy, prompt_id: str, base: Path) -> Path:
    (mp4,) = [p for p in comfy.output_files(prompt_id, base) if p.suffix == ".mp4"]
    assert mp4.is_file()
    return mp4


def probe_mp4(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = Fraction(video.average_rate)
        frames = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
        rate = audio.sample_rate
    return {"frames": frames, "fps": fps, "audio_seconds": samples / rate}


def add_png_taps(prompt: dict, prefix: str) -> None:
    """Lossless copies of the input frames, the result frames and the mask (SaveImage PNGs)."""
    fit, paste, face = (node_id(prompt, t) for t in
                        ("SayAnythingFitAudioToVideo", "SayAnythingFacePaste", "SayAnythingFaceMask"))
    prompt["tap_in"] = {"class_type": "SaveImage", "inputs": {"images": [fit, 0], "filename_prefix": f"{prefix}_in"}}
    prompt["tap_out"] = {"class_type": "SaveImage",
                         "inputs": {"images": [paste, 0], "filename_prefix": f"{prefix}_out"}}
    prompt["tap_mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": [face, 0]}}
    prompt["tap_mask"] = {"class_type": "SaveImage",
                          "inputs": {"images": ["tap_mask_image", 0], "filename_prefix": f"{prefix}_mask"}}


def read_taps(comfy, prompt_id: str, base: Path, prefix: str) -> dict[str, np.ndarray]:
    files = comfy.output_files(prompt_id, base)
    taps = {}
    for kind in ("in", "out", "mask"):
        paths = sorted(p for p in files if p.name.startswith(f"{prefix}_{kind}_"))
        taps[kind] = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return taps


def assert_unchanged_outside_mask(taps: dict[str, np.ndarray]) -> None:
    import cv2

    frames_in, frames_out, mask = taps["in"], taps["out"], taps["mask"][..., 0]
    assert frames_in.shape == frames_out.shape
    # Paste-back goes through the crop-space mask, warped to the crop and back bilinearly: with the
    # tests' 64 px crops of a ~300 px face one crop pixel spans ~5 frame pixels, so the exact-equality
    # region starts a dozen pixels outside the frame-space mask.
    grown = np.stack([cv2.dilate(m, np.ones((25, 25), np.uint8)) for m in mask])
    outside = grown == 0
    assert outside.mean() > 0.5
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(frames_out[outside], frames_in[outside])
    # Inside the mask the (untrained) model did regenerate the pixels.
    inside = mask == 255
    assert np.abs(frames_out[inside].astype(int) - frames_in[inside].astype(int)).mean() > 5
