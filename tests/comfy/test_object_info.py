"""The pack loads into a real ComfyUI and declares its nodes the way the workflows need them."""

from __future__ import annotations

import pytest

from tests.support.workflows import PACK_NODES as EXPECTED

pytestmark = pytest.mark.comfy


def test_every_node_is_registered_with_its_types(object_info):
    ours = {name for name in object_info if name.startswith("SayAnything")}
    assert ours == set(EXPECTED)
    for name, (outputs, required) in EXPECTED.items():
        info = object_info[name]
        assert info["output"] == outputs, name
        assert list(info["input"]["required"]) == required, name
        assert info["category"] == "SayAnything"


def test_custom_types_carry_the_pack_prefix(object_info):
    core = {"IMAGE", "MASK", "AUDIO", "VIDEO", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
    for name in EXPECTED:
        info = object_info[name]
        types = list(info["output"])
        for section in ("required", "optional"):
            types += [spec[0] for spec in info["input"].get(section, {}).values() if isinstance(spec[0], str)]
        for kind in set(types) - core:
            assert kind.startswith("SAYANYTHING_"), f"{name} uses the unprefixed type {kind}"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_display_name_spells_the_node_id(object_info, name):
    # "SayAnything Fit Audio to Video" for SayAnythingFitAudioToVideo: what users see in the menu is what a
    # workflow file or an error message names; a parenthesis may add a hint ("(ID-Guider)").
    display = object_info[name]["display_name"].split(" (")[0]
    assert display.replace(" ", "").lower() == name.lower()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_descriptions_say_what_to_connect(object_info, name):
    # Every node with a custom-typed or media input names the node its input comes from or its output goes to.
    description = object_info[name]["description"]
    others = [other for other in EXPECTED if other != name]
    named = [other for other in others if object_info[other]["display_name"] in description]
    assert "Connect" in description and named, description


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
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tools.comfyui import comfyui_dir

    repo = Path(__file__).resolve().parents[2]
    script = f"""
import asyncio, importlib.util, sys
sys.argv = ["main.py", "--cpu"]
from tools.comfyui import define_missing_torchvision_schemas
define_missing_torchvision_schemas()
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
    # The checkout (for tools.comfyui) and ComfyUI's folder on the path, as `python main.py` has them.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(comfyui_dir())]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
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
