"""Every example workflow in the real ComfyUI web frontend, in headless Debian Chromium.

Checks that each workflow loads with no missing node types and no node in error, that the
frontend's own UI->API conversion equals tools/comfy_client.workflow_to_api (which the other tests
use to run the workflows), and keeps a screenshot of each in test-artifacts/.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile

import pytest
import requests

from tools.comfy_client import example_workflows, load_workflow, workflow_to_api

pytestmark = [pytest.mark.comfy, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]

LOAD_AND_INSPECT = """async (workflow) => {
  await window.app.loadGraphData(workflow);
  await new Promise(r => setTimeout(r, 300));
  const registered = window.LiteGraph.registered_node_types;
  const nodes = window.app.graph.nodes;
  return {
    count: nodes.length,
    missing: workflow.nodes.map(n => n.type).filter(t => !(t in registered)),
    errors: nodes.filter(n => n.has_errors).map(n => `${n.id}:${n.type}`),
  };
}"""


def declared(info: dict, name: str) -> bool:
    return any(name in info["input"].get(section, {}) for section in ("required", "optional"))


@pytest.fixture(scope="module")
def page(comfy_server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    requests.post(f"{comfy_server.url}/api/settings", json={"Comfy.TutorialCompleted": True}, timeout=10)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 2300, "height": 1100},
        )
        page = context.new_page()
        page.goto(comfy_server.url)
        page.wait_for_function(
            "window.app && window.app.graph && window.LiteGraph && "
            "'SayAnythingSampler' in window.LiteGraph.registered_node_types",
            timeout=120_000,
        )
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def test_there_are_example_workflows():
    names = {path.name for path in example_workflows()}
    assert {"sayanything_video_lipsync.json", "sayanything_talking_image.json", "sayanything_user_mask.json"} <= names


@pytest.mark.parametrize("path", example_workflows(), ids=lambda p: p.stem)
def test_workflow_loads_in_the_frontend(page, path, object_info, artifacts_dir):
    workflow = load_workflow(path)
    report = page.evaluate(LOAD_AND_INSPECT, workflow)
    page.screenshot(path=str(artifacts_dir / f"{path.stem}.png"))
    assert report["missing"] == []
    assert report["errors"] == []
    assert report["count"] == len(workflow["nodes"])

    # The frontend's own conversion (what the Queue button sends) equals ours.
    assert json.loads(json.dumps(workflow_to_api(workflow, object_info))) == frontend_prompt(page, object_info)


def frontend_prompt(page, object_info: dict) -> dict:
    """The API prompt the frontend makes of its current graph (what the Queue button sends)."""
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    # Inputs the node does not declare (the audio player's "audioUI") are ignored by the server.
    return {
        node_id: {"class_type": node["class_type"], "inputs": {
            name: value for name, value in node["inputs"].items() if declared(object_info[node["class_type"]], name)
        }}
        for node_id, node in prompt.items()
    }


def test_a_workflow_saved_before_the_type_prefix_still_loads(page, object_info):
    # Files saved before the socket types got the SAYANYTHING_ prefix name the old types on their links
    # and slots; the frontend keeps every link (links join slots, whatever the type is called), so the
    # prompt it sends is the same as for the current file.
    path = next(path for path in example_workflows() if path.name == "sayanything_talking_image.json")
    text = path.read_text()
    for old in ("WHISPER_FEATURES", "FACE_TRACK", "FACE_CROP", "ID_FEATURES"):
        assert f'"SAYANYTHING_{old}"' in text
        text = text.replace(f'"SAYANYTHING_{old}"', f'"{old}"')
    old_workflow = json.loads(text)
    report = page.evaluate(LOAD_AND_INSPECT, old_workflow)
    assert report["missing"] == [] and report["errors"] == []
    current = workflow_to_api(load_workflow(path), object_info)
    assert frontend_prompt(page, object_info) == json.loads(json.dumps(current))


def test_a_missing_node_type_is_detected(page):
    # The check above must be able to fail: an unknown type is reported as missing and in error.
    workflow = copy.deepcopy(load_workflow(example_workflows()[0]))
    workflow["nodes"][0]["type"] = "SayAnythingNodeThatDoesNotExist"
    report = page.evaluate(LOAD_AND_INSPECT, workflow)
    assert report["missing"] == ["SayAnythingNodeThatDoesNotExist"]


def test_workflows_are_served_as_the_packs_templates(comfy_server):
    # The frontend's Templates dialog lists these under the pack's folder name.
    names = sorted(path.stem for path in example_workflows())
    listed = requests.get(f"{comfy_server.url}/api/workflow_templates", timeout=10).json()
    assert sorted(listed["comfyui-sayanything"]) == names
    served = requests.get(f"{comfy_server.url}/api/workflow_templates/comfyui-sayanything/{names[0]}.json", timeout=10)
    assert served.json() == load_workflow(example_workflows()[0])


def test_speed_widgets_round_trip_through_workflow_json(page, object_info):
    # The speed preset and the settings under it, set away from their defaults, survive a saved workflow
    # file: the frontend loads them into the right widgets and queues the same values.
    from tools.make_workflows import talking_image

    widgets = dict(speed="fast", guidance_sigma_low=0.5, guidance_sigma_high=40.0, deep_cache=3, schedule="karras",
                   window_batch=2, compile=True)
    workflow = json.loads(json.dumps(talking_image(object_info, sampler=widgets)))
    report = page.evaluate(LOAD_AND_INSPECT, workflow)
    assert report["missing"] == [] and report["errors"] == []
    sent = frontend_prompt(page, object_info)
    (sampler,) = [node for node in sent.values() if node["class_type"] == "SayAnythingSampler"]
    assert {name: sampler["inputs"][name] for name in widgets} == widgets
    assert sent == json.loads(json.dumps(workflow_to_api(workflow, object_info)))
