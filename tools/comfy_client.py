"""A small client for a running ComfyUI server: start it, convert workflows, queue them, follow them.

Used by the test suite (tests/comfy) and by ``tools/start.sh --demo``. Only the standard library,
``requests`` and ``websocket-client`` (both in the test extra and in ComfyUI's requirements).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import websocket

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "tools" / "comfyui.py"
PACK_FOLDER_NAME = "comfyui-sayanything"

# Widget types the frontend draws for an input; any other type is a socket only.
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Extra widgets the frontend appends after a combo with an upload flag, with how many values each
# adds to ``widgets_values`` (checked against the real frontend by tests/comfy/test_frontend.py).
UPLOAD_EXTRA_VALUES = {"image_upload": 1, "video_upload": 1, "audio_upload": 2}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_base_directory(base: Path) -> Path:
    """Create a ComfyUI base directory with this pack linked into ``custom_nodes``."""
    for name in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / name).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return base


@dataclass
class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with its own base directory."""

    base: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    python: str = sys.executable  # the environment ComfyUI runs in
    comfyui: Path | None = None  # the ComfyUI folder; None: tools/comfyui.py's default

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_args: tuple[str, ...] = (), cpu: bool = True, timeout: float = 120.0) -> ComfyServer:
        prepare_base_directory(self.base)
        self.log_path = self.base / "comfyui.log"
        command = [
            self.python, str(LAUNCHER),
            *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch", *extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.comfyui is not None:
            env["SAYANYTHING_COMFYUI"] = str(self.comfyui)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/system_stats", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


class PromptRejected(Exception):
    """The prompt failed validation (see ``node_errors``): a 400, or a 200 where ComfyUI queued only
    the output nodes that validated (``prompt_id`` is then set)."""

    def __init__(self, body: dict):
        self.body = body
        self.node_errors: dict = body.get("node_errors", {})
        self.prompt_id: str | None = body.get("prompt_id")
        super().__init__(json.dumps(body)[:2000])


@dataclass
class PromptResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    events: list[dict]
    error: dict | None = None

    def progress_events(self) -> list[dict]:
        return [event["data"] for event in self.events if event["type"] == "progress"]


class ComfyClient:
    """HTTP + websocket client for one ComfyUI server."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self._ws: websocket.WebSocket | None = None

    # -- HTTP
    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def object_info(self) -> dict:
        return self.get("/object_info").json()

    def history(self, prompt_id: str) -> dict:
        return self.get(f"/history/{prompt_id}").json().get(prompt_id, {})

    def interrupt(self) -> None:
        requests.post(self.url + "/interrupt", timeout=10).raise_for_status()

    def upload(self, path: Path) -> str:
        """Upload a file (image, audio or video) into the server's input folder, as the frontend does."""
        with open(path, "rb") as handle:
            answer = requests.post(
                self.url + "/upload/image",
                files={"image": (path.name, handle)},
                data={"overwrite": "true", "type": "input"},
                timeout=60,
            )
        answer.raise_for_status()
        return answer.json()["name"]

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        """Queue an API-format prompt; raises PromptRejected with ``node_errors`` on a 400."""
        self._connect()
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        answer = requests.post(self.url + "/prompt", json=body, timeout=30)
        if answer.status_code == 400:
            raise PromptRejected(answer.json())
        answer.raise_for_status()
        body = answer.json()
        if body.get("node_errors"):
            raise PromptRejected(body)
        return body["prompt_id"]

    # -- websocket
    def _connect(self) -> None:
        if self._ws is not None and self._ws.connected:
            return
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self._ws = websocket.create_connection(ws_url, timeout=5)

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def wait(self, prompt_id: str, timeout: float = 300.0, on_event=None) -> PromptResult:
        """Follow the websocket until the prompt ends; ``on_event(event)`` sees every JSON message."""
        return self.wait_all([prompt_id], timeout=timeout, on_event=on_event)[prompt_id]

    def wait_all(self, prompt_ids, timeout: float = 300.0, on_event=None) -> dict[str, PromptResult]:
        """Follow the websocket until every queued prompt in ``prompt_ids`` has ended (ComfyUI runs them
        one after another); ``on_event(event)`` sees every JSON message. Raises TimeoutError when one
        has not ended within ``timeout`` seconds of the call (a stuck queue)."""
        self._connect()
        pending = set(prompt_ids)
        events: dict[str, list[dict]] = {prompt_id: [] for prompt_id in pending}
        outcomes: dict[str, PromptResult] = {}
        results: dict[str, PromptResult] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            try:
                message = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                # A prompt that finished before we listened is in the history.
                for prompt_id in list(pending):
                    entry = self.history(prompt_id)
                    if entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
                        results[prompt_id] = self._result_from_history(prompt_id, entry, events[prompt_id])
                        pending.discard(prompt_id)
                continue
            if isinstance(message, bytes):
                continue  # binary previews
            event = json.loads(message)
            if on_event is not None:
                on_event(event)
            data = event.get("data", {})
            prompt_id = data.get("prompt_id")
            if prompt_id not in pending:
                continue
            events[prompt_id].append(event)
            kind = event["type"]
            # The outcome arrives first; the history is written before the final "executing: None".
            if kind == "execution_error":
                outcomes[prompt_id] = PromptResult(prompt_id, "error", events[prompt_id], error=data)
            elif kind == "execution_interrupted":
                outcomes[prompt_id] = PromptResult(prompt_id, "interrupted", events[prompt_id])
            elif kind == "executing" and data.get("node") is None:
                results[prompt_id] = outcomes.get(prompt_id) or PromptResult(prompt_id, "success", events[prompt_id])
                pending.discard(prompt_id)
        if pending:
            raise TimeoutError(f"prompts {sorted(pending)} did not finish within {timeout:.0f} s")
        return results

    @staticmethod
    def _result_from_history(prompt_id: str, entry: dict, events: list[dict]) -> PromptResult:
        status = entry["status"]
        messages = {name: data for name, data in status.get("messages", [])}
        if "execution_error" in messages:
            return PromptResult(prompt_id, "error", events, error=messages["execution_error"])
        if "execution_interrupted" in messages:
            return PromptResult(prompt_id, "interrupted", events)
        return PromptResult(prompt_id, "success", events)

    def run(self, prompt: dict, workflow: dict | None = None, timeout: float = 300.0, on_event=None) -> PromptResult:
        return self.wait(self.queue(prompt, workflow), timeout=timeout, on_event=on_event)

    def output_files(self, prompt_id: str, base: Path) -> list[Path]:
        """Every file the prompt's output nodes reported, as paths under the base directory."""
        files: list[Path] = []
        for node_output in self.history(prompt_id).get("outputs", {}).values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item:
                        folder = item.get("type", "output")
                        files.append(base / folder / item.get("subfolder", "") / item["filename"])
        return files


# -- workflow conversion


def input_specs(info: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) for every input of a node in the frontend's order (required, optional)."""
    specs = []
    for section in ("required", "optional"):
        entries = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(entries))
        for name in order:
            spec = entries[name]
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, "COMBO" if isinstance(kind, list) else kind, options))
    return specs


def workflow_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (what users save and share) into the API prompt format.

    Widget values are matched to input names by walking the node's inputs in /object_info order,
    the way the frontend creates widgets: one value per widget input, plus one for the
    ``control_after_generate`` widget after a seed and the values of upload widgets after a combo.
    Muted (mode 2) nodes are left out; bypassed nodes (mode 4) are not supported here.
    """
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) == 2 or node["type"] in ("Note", "MarkdownNote", "Reroute"):
            continue
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; bypass is not supported")
        if node["type"] not in object_info:
            raise KeyError(f"node type {node['type']!r} (node {node['id']}) is not registered on the server")
        linked = {}
        for socket_ in node.get("inputs", []):
            if socket_.get("link") is not None:
                link = links[socket_["link"]]
                source = nodes[link[1]]
                if source["type"] == "Reroute":
                    raise ValueError("Reroute nodes are not supported by this converter")
                linked[socket_["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ValueError(f"node {node['id']} stores widgets as a dict; not supported")
        inputs: dict[str, Any] = {}
        position = 0
        for name, kind, options in input_specs(object_info[node["type"]]):
            is_widget = kind in WIDGET_TYPES and not options.get("forceInput")
            if is_widget:
                if position < len(values):
                    inputs[name] = values[position]
                position += 1
                if options.get("control_after_generate"):
                    position += 1
                for flag, extra in UPLOAD_EXTRA_VALUES.items():
                    if options.get(flag):
                        position += extra
            if name in linked:
                inputs[name] = linked[name]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def example_workflows() -> list[Path]:
    """The pack's example workflows (served by ComfyUI as the pack's workflow templates)."""
    return sorted((REPO / "workflows").glob("*.json"))


def load_workflow(path: Path) -> dict:
    return json.loads(Path(path).read_text())
