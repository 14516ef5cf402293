"""The pack loads into a real ComfyUI and declares its nodes the way the workflows need them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.comfy

EXPECTED = {
    "SayAnythingLoadAudio": (["AUDIO"], ["audio", "start", "duration"]),
    "SayAnythingFitAudioToVideo": (["IMAGE", "AUDIO", "INT"], ["images", "audio", "fps", "mode"]),
    "SayAnythingWhisperLoader": (["SAYANYTHING_WHISPER"], ["model", "precision", "device"]),
    "SayAnythingWhisperFeatures": (["WHISPER_FEATURES"], ["whisper", "audio", "fps", "frame_count", "window"]),
    "SayAnythingFaceMask": (["MASK", "FACE_TRACK", "IMAGE"],
                            ["images", "fps", "face", "face_index", "upper_edge", "expand", "feather"]),
    "SayAnythingLoadFaceTrack": (["MASK", "FACE_TRACK", "IMAGE"],
                                 ["images", "track_file", "fps", "upper_edge", "expand", "feather"]),
    "SayAnythingFaceCrop": (["IMAGE", "MASK", "FACE_CROP"], ["images", "mask", "face_track", "crop_size"]),
    "SayAnythingFacePaste": (["IMAGE"], ["images", "crops", "crop_mask", "face_crop"]),
    "SayAnythingModelLoader": (["SAYANYTHING_MODEL"], ["model", "svd_checkpoint", "precision"]),
    "SayAnythingReferenceEncode": (["ID_FEATURES"], ["model", "reference", "frame_index"]),
    "SayAnythingSampler": (["IMAGE"], ["model", "crops", "crop_mask", "audio_features", "id_features", "fps", "steps",
                                       "seed", "reference_guidance", "audio_guidance", "window", "overlap",
                                       "decode_chunk"]),
    "SayAnythingLipSyncVideo": (["VIDEO"], ["model", "whisper", "video", "audio", "fit", "seed", "steps",
                                            "reference_guidance", "audio_guidance", "crop_size", "upper_edge",
                                            "reference_frame", "crf"]),
}


def test_every_node_is_registered_with_its_types(object_info):
    ours = {name for name in object_info if name.startswith("SayAnything")}
    assert ours == set(EXPECTED)
    for name, (outputs, required) in EXPECTED.items():
        info = object_info[name]
        assert info["output"] == outputs, name
        assert list(info["input"]["required"]) == required, name
        assert info["category"] == "SayAnything"


def test_every_input_has_a_tooltip(object_info):
    for name in EXPECTED:
        for section in ("required", "optional"):
            for input_name, spec in object_info[name]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_core_ids_are_left_alone(object_info):
    # Our loader must not replace ComfyUI's own LoadAudio.
    assert object_info["LoadAudio"]["python_module"] == "comfy_extras.nodes_audio"


def test_audio_loader_lists_audio_and_video_files(comfy_server, comfy):
    for name in ("speech_probe.wav", "clip_probe.mp4", "notes_probe.txt"):
        (comfy_server.base / "input" / name).write_bytes(b"")
    options = comfy.object_info()["SayAnythingLoadAudio"]["input"]["required"]["audio"][1]["options"]
    assert "speech_probe.wav" in options and "clip_probe.mp4" in options
    assert "notes_probe.txt" not in options


def test_loading_the_pack_imports_nothing_heavy(tmp_path):
    # Import the pack the way ComfyUI does (by file path, under a path-like module name) and list the
    # nodes; mediapipe, transformers and diffusers must wait until a node runs.
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = f"""
import asyncio, importlib.util, sys
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, {str(repo)!r})
from tools.comfyui import comfyui_dir, define_missing_torchvision_schemas
define_missing_torchvision_schemas()
sys.path.insert(0, str(comfyui_dir()))
import comfy.options
comfy.options.enable_args_parsing()
name = {str(repo)!r}.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, {str(repo / '__init__.py')!r})
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
extension = asyncio.run(module.comfy_entrypoint())
nodes = asyncio.run(extension.get_node_list())
print(len(nodes), sorted(m for m in ("mediapipe", "transformers", "diffusers", "cv2") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == f"{len(EXPECTED)} []"


def test_model_folders_follow_extra_model_paths_yaml(tmp_path):
    # Users keep models elsewhere and point ComfyUI at them with extra_model_paths.yaml.
    from tools.comfy_client import ComfyClient, ComfyServer

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sa").mkdir(parents=True)
    (elsewhere / "sa" / "my_lipsync.safetensors").write_bytes(b"")
    (elsewhere / "wh" / "my-whisper").mkdir(parents=True)
    (elsewhere / "wh" / "my-whisper" / "config.json").write_text("{}")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"mine:\n    base_path: {elsewhere}\n    sayanything: sa\n    whisper: wh\n")
    server = ComfyServer(tmp_path / "base").start(extra_args=("--extra-model-paths-config", str(config)))
    try:
        info = ComfyClient(server.url).object_info()
    finally:
        server.stop()
    assert "my_lipsync.safetensors" in info["SayAnythingModelLoader"]["input"]["required"]["model"][1]["options"]
    assert "my-whisper" in info["SayAnythingWhisperLoader"]["input"]["required"]["model"][1]["options"]
