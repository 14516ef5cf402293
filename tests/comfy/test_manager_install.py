"""The pack installed the way ComfyUI-Manager installs it, into a ComfyUI that has only its own
requirements: a fresh virtual environment with ComfyUI 0.3.75's requirements (CPU torch from
tools/constraints.txt), a copy of .cache/comfyui without what tools/start.sh or the user put in its
custom_nodes, models, input or user folders, the checkout cloned into that copy's ``custom_nodes`` (its
working tree as it is now, uncommitted changes included), ``pip install -r requirements.txt``, then a
real server over HTTP.

With the current mediapipe that pip picks (Tasks API only, no face model bundled) every node
registers and the face node answers with what to download and where to put it; after
tools/install_offline_mediapipe.sh (mediapipe 0.10.21) the talking-image workflow runs to an mp4.
About two minutes (pip from the registry, two server starts); figures in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.version import Version
from PIL import Image

from tests.support.manager import comfyui_with_pack_cloned, run
from tests.support.workflows import PACK_NODES, node_id, prompt_for, saved_mp4
from tools.comfy_client import ComfyClient, ComfyServer
from tools.demo_assets import PORTRAIT_FILE, SPEECH_FILE

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[2]


def versions(python: Path, *names: str) -> dict[str, str]:
    script = ("import importlib.metadata as m, json, sys\n"
              "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    return json.loads(run([python, "-c", script, *names]).stdout)


@pytest.fixture(scope="module")
def manager_install(tmp_path_factory, comfy_models, astronaut, speech_wav):
    """(python, ComfyUI folder, timings) of a fresh ComfyUI with the pack installed as Manager does."""
    root = tmp_path_factory.mktemp("manager_install")
    timings = {}
    started = time.monotonic()
    run([sys.executable, "-m", "venv", root / "venv"])
    python = root / "venv" / "bin" / "python"
    comfy = root / "ComfyUI"
    # The shared ComfyUI's code only: tools/start.sh's link in its custom_nodes, its models and inputs stay behind.
    pack = comfyui_with_pack_cloned(comfy)
    run(["bash", REPO / "tools" / "install_comfyui.sh", python, comfy], timeout=1800)
    timings["comfyui_requirements_s"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    torch_before = versions(python, "torch")
    # What Manager runs. The constraint only turns a torch replacement (a multi-GB download here) into
    # a resolver error; the assertion below is what shows it never happens.
    guard = root / "torch-guard.txt"
    guard.write_text(f"torch=={torch_before['torch']}\n")
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", guard,
         "-r", pack / "requirements.txt"], timeout=1800)
    timings["pack_requirements_s"] = round(time.monotonic() - started, 1)
    assert versions(python, "torch") == torch_before

    # Models and inputs where a user keeps them.
    shutil.copytree(comfy_models, comfy / "models", dirs_exist_ok=True)
    (comfy / "input").mkdir(exist_ok=True)
    Image.fromarray(astronaut).save(comfy / "input" / PORTRAIT_FILE)
    shutil.copy(speech_wav, comfy / "input" / SPEECH_FILE)
    return python, comfy, timings


def start(python: Path, comfy: Path) -> ComfyServer:
    # The ComfyUI folder is its own base directory: custom_nodes/, models/, input/ inside it, as installed.
    return ComfyServer(comfy, python=str(python), comfyui=comfy).start(timeout=300)


def talking_image(object_info: dict) -> dict:
    prompt, _ = prompt_for("sayanything_talking_image.json", object_info, {"PrimitiveFloat": {"value": 4.0}})
    return prompt


def test_manager_install_with_current_mediapipe_then_offline_mediapipe(manager_install, artifacts_dir):
    python, comfy, timings = manager_install
    installed = versions(python, "mediapipe", "diffusers", "pyloudnorm", "numpy", "torch")
    assert Version(installed["mediapipe"]) > Version("0.10.21")  # the Tasks-only kind

    started = time.monotonic()
    server = start(python, comfy)
    timings["server_start_s"] = round(time.monotonic() - started, 1)
    try:
        client = ComfyClient(server.url)
        object_info = client.object_info()
        assert {name for name in object_info if name.startswith("SayAnything")} == set(PACK_NODES)
        assert "IMPORT FAILED" not in server.log_tail(100_000)
        # No face model: the face node fails with what to get and where to put it; the server carries on.
        prompt = talking_image(object_info)
        result = client.run(prompt, timeout=600)
        assert result.status == "error"
        assert result.error["node_type"] == "SayAnythingFaceMask"
        message = result.error["exception_message"]
        assert "face_landmarker.task" in message and str(comfy / "models" / "mediapipe") in message
        assert "mediapipe==0.10.21" in message
        client.close()
    finally:
        server.stop()

    # The offline face mesh: after the script the same workflow runs to a video.
    started = time.monotonic()
    run(["bash", REPO / "tools" / "install_offline_mediapipe.sh", python], timeout=1800)
    timings["offline_mediapipe_s"] = round(time.monotonic() - started, 1)
    assert versions(python, "mediapipe")["mediapipe"] == "0.10.21"
    server = start(python, comfy)
    try:
        client = ComfyClient(server.url)
        prompt = talking_image(client.object_info())
        started = time.monotonic()
        result = client.run(prompt, timeout=900)
        timings["workflow_s"] = round(time.monotonic() - started, 1)
        assert result.status == "success", result.error
        assert saved_mp4(client, result.prompt_id, comfy).stat().st_size > 0
        assert node_id(prompt, "SayAnythingSampler")
        client.close()
    finally:
        server.stop()
    (artifacts_dir / "manager_install.json").write_text(json.dumps({"versions": installed, **timings}, indent=1))
    print(json.dumps({"versions": installed, **timings}))


def test_the_guard_would_catch_a_torch_replacement(tmp_path):
    # The torch guard above must be able to fail: a requirement on another torch is refused, not fetched.
    guard = tmp_path / "guard.txt"
    guard.write_text("torch==2.13.0\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "-c", guard, "torch==2.4.0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "torch" in done.stderr
