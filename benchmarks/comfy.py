"""Time the pack in a real ComfyUI: server start, /object_info, and one workflow run node by node.

Usage: python -m benchmarks.comfy [--fps 25] [--crop 256] [--steps 4] [--json out.json]
       python -m benchmarks.comfy --long-video CLIP.mp4 SPEECH.wav [CLIP2.mp4 SPEECH2.wav ...] [--steps 1]

Starts a private ComfyUI (CPU unless CUDA is there) on a temporary base folder with the default
model, Whisper tiny.en and the demo inputs (tools.demo_assets), runs
workflows/sayanything_talking_image.json, and prints wall-clock seconds per node (from the
websocket's ``executing`` messages) and the server's peak RSS. With ``--long-video`` it runs
workflows/sayanything_long_video.json on each clip in turn in the same server and reports the
server's peak RSS after each (the growth from one clip to a longer one is what streaming bounds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tools.comfy_client import ComfyClient, ComfyServer, load_workflow, workflow_to_api
from tools.demo_assets import install

REPO = Path(__file__).resolve().parent.parent


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--window", type=int, default=14)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--long-video", nargs="+", type=Path, metavar="CLIP SPEECH",
                        help="pairs of video and speech files for the long-video workflow")
    args = parser.parse_args()
    if args.long_video:
        return long_video(args)

    import torch

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        install(base)
        server = ComfyServer(base)
        started = time.monotonic()
        server.start(cpu=not torch.cuda.is_available())
        ready_s = time.monotonic() - started
        try:
            client = ComfyClient(server.url)
            started = time.monotonic()
            object_info = client.object_info()
            object_info_s = time.monotonic() - started
            workflow = load_workflow(REPO / "workflows" / "sayanything_talking_image.json")
            prompt = workflow_to_api(workflow, object_info)
            settings = {"PrimitiveFloat": {"value": args.fps}, "SayAnythingFaceCrop": {"crop_size": args.crop},
                        "SayAnythingSampler": {"steps": args.steps, "window": args.window}}
            for node in prompt.values():
                node["inputs"].update(settings.get(node["class_type"], {}))
            timeline: list[tuple[float, str | None]] = []

            def on_event(event: dict) -> None:
                if event["type"] == "executing":
                    timeline.append((time.monotonic(), event["data"].get("node")))

            started = time.monotonic()
            result = client.run(prompt, workflow, timeout=3600, on_event=on_event)
            total_s = time.monotonic() - started
            if result.status != "success":
                print(json.dumps(result.error, indent=1), file=sys.stderr)
                return 1
            per_node: dict[str, float] = {}
            for (when, node), (next_when, _) in zip(timeline, timeline[1:]):
                if node is not None:
                    name = prompt[node]["class_type"]
                    per_node[name] = per_node.get(name, 0.0) + next_when - when
            frames = None
            for path in client.output_files(result.prompt_id, base):
                if path.suffix == ".mp4":
                    import av

                    with av.open(str(path)) as container:
                        frames = sum(1 for _ in container.decode(container.streams.video[0]))
            report = {
                "server_ready_s": round(ready_s, 2), "object_info_s": round(object_info_s, 3),
                "workflow_s": round(total_s, 2), "frames": frames, "settings": vars(args) | {"json": None},
                "per_node_s": {k: round(v, 2) for k, v in sorted(per_node.items(), key=lambda kv: -kv[1])},
                "server_peak_rss_mib": round(peak_rss_mib(server.process.pid)),
            }
        finally:
            server.stop()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def long_video(args) -> int:
    import shutil

    import torch

    pairs = list(zip(args.long_video[0::2], args.long_video[1::2]))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        install(base)
        for video, speech in pairs:
            shutil.copy(video, base / "input" / video.name)
            shutil.copy(speech, base / "input" / speech.name)
        server = ComfyServer(base)
        server.start(cpu=not torch.cuda.is_available())
        try:
            client = ComfyClient(server.url)
            object_info = client.object_info()
            workflow = load_workflow(REPO / "workflows" / "sayanything_long_video.json")
            for video, speech in pairs:
                prompt = workflow_to_api(workflow, object_info)
                for node in prompt.values():
                    if node["class_type"] == "LoadVideo":
                        node["inputs"]["file"] = video.name
                    elif node["class_type"] == "LoadAudio":
                        node["inputs"]["audio"] = speech.name
                    elif node["class_type"] == "SayAnythingLipSyncVideo":
                        node["inputs"].update(steps=args.steps)
                started = time.monotonic()
                result = client.run(prompt, workflow, timeout=3600)
                if result.status != "success":
                    print(json.dumps(result.error, indent=1), file=sys.stderr)
                    return 1
                rows.append({"video": video.name, "workflow_s": round(time.monotonic() - started, 1),
                             "server_peak_rss_mib": round(peak_rss_mib(server.process.pid))})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
