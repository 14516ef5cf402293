"""Run a UI-format workflow headless on a private ComfyUI server and print the files it saved.

Usage: python -m tools.run_workflow WORKFLOW.json --base BASE [--set NODE_TYPE.INPUT=VALUE ...]

``--base`` is a ComfyUI base folder (models/, input/, output/); the server gets its own port and an
in-memory database and stops afterwards. ``--set`` changes a widget of every node of that type,
e.g. ``--set SayAnythingSampler.steps=4``. Progress goes to stderr; saved file paths to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.comfy_client import ComfyClient, ComfyServer, load_workflow, workflow_to_api


def apply_overrides(prompt: dict, overrides: list[str]) -> dict:
    for item in overrides:
        target, _, raw = item.partition("=")
        node_type, _, name = target.partition(".")
        if not raw or not name:
            raise SystemExit(f"--set needs NODE_TYPE.INPUT=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        matched = [node for node in prompt.values() if node["class_type"] == node_type]
        if not matched:
            raise SystemExit(f"--set {item}: the workflow has no {node_type} node")
        for node in matched:
            node["inputs"][name] = value
    return prompt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    workflow = load_workflow(args.workflow)
    server = ComfyServer(args.base.resolve())
    print(f"[run] starting ComfyUI on {server.url} (base {server.base})", file=sys.stderr)
    server.start(cpu=not _cuda())
    try:
        client = ComfyClient(server.url)
        prompt = apply_overrides(workflow_to_api(workflow, client.object_info()), args.overrides)

        def report(event: dict) -> None:
            data = event.get("data", {})
            if event["type"] == "executing" and data.get("node"):
                print(f"[run] node {data['node']} ({prompt[data['node']]['class_type']})", file=sys.stderr)
            elif event["type"] == "progress":
                print(f"[run]   {data['value']}/{data['max']}", file=sys.stderr)

        result = client.run(prompt, workflow, timeout=args.timeout, on_event=report)
        if result.status != "success":
            error = result.error or {}
            print(f"[run] {result.status}: {error.get('exception_message', '')}", file=sys.stderr)
            return 1
        for path in client.output_files(result.prompt_id, server.base):
            print(path)
        return 0
    finally:
        server.stop()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
