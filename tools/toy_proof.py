"""The toy model's proof through the user's path: generated talking videos dubbed with new speech.

Usage: python tools/toy_proof.py [--model M] [--whisper DIR] [--seeds 1 2] [--clips 3] [--output JSON]

For every case of ``lipsync_core.toy.proof.dub_cases`` (held-out characters of world seeds the model
never saw, each a talking source, plus another clip's sentence) the model dubs the video twice on
each path -- with the new sentence and with silence (LipLeak):

- ComfyUI: a private real server (tools/comfy_client.py) runs the pack's example workflow
  ``workflows/sayanything_video_lipsync.json`` over HTTP on the uploaded mp4 and wav; its face node
  is swapped for ``SayAnything Load Face Track`` (the character's known track as .npz: mediapipe
  does not see drawn faces) and the mp4 it saves is decoded and measured;
- the library: ``inference.lipsync`` with the same inputs.

Every setting comes from the model file's ``defaults``. Figures (``proof.case_figures``) per path
and seed and pooled go to the JSON, with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.comfy_client import ComfyClient, ComfyServer, load_workflow, workflow_to_api  # noqa: E402
from tools.demo_assets import WHISPER_FOLDER  # noqa: E402

WORKFLOW = REPO / "workflows" / "sayanything_video_lipsync.json"


def write_wav(path: Path, waveform: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(waveform, -1, 1) * 32767).astype(np.int16).tobytes())


def read_mp4(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def workflow_prompt(object_info: dict, video: str, speech: str, track: str, model: str, defaults, prefix: str) -> dict:
    """The example video workflow as an API prompt, on these inputs, at the model's own settings."""
    prompt = workflow_to_api(load_workflow(WORKFLOW), object_info)
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "SayAnythingFaceMask":  # same outputs (mask, face_track, preview): the links stay
            prompt[node_id] = {"class_type": "SayAnythingLoadFaceTrack", "inputs": {
                "images": inputs["images"], "track_file": track, "upper_edge": defaults.upper_edge,
                "expand": defaults.mask_expand, "feather": defaults.mask_feather}}
        elif kind == "LoadVideo":
            inputs["file"] = video
        elif kind == "SayAnythingLoadAudio":
            inputs["audio"] = speech
        elif kind == "SayAnythingFitAudioToVideo":
            inputs["mode"] = "cut"
        elif kind == "SayAnythingModelLoader":
            inputs["model"] = model
        elif kind == "SaveVideo":
            inputs["filename_prefix"] = f"proof/{prefix}"
    # The model's defaults wherever the workflow has a widget for them (what `auto` resolves to).
    settings = {"SayAnythingFaceCrop": {"crop_size": defaults.crop_size},
                "SayAnythingSampler": {"steps": defaults.steps, "seed": 0,
                                       "reference_guidance": defaults.reference_guidance,
                                       "audio_guidance": defaults.audio_guidance, "window": defaults.window,
                                       "overlap": defaults.overlap, "noise_aug_strength": defaults.noise_aug_strength}}
    for node in prompt.values():
        for name, value in settings.get(node["class_type"], {}).items():
            if name in object_info[node["class_type"]]["input"].get("required", {}) or \
                    name in object_info[node["class_type"]]["input"].get("optional", {}):
                node["inputs"][name] = value
    return prompt


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version()}


def main() -> int:
    from lipsync_core import inference
    from lipsync_core.toy.demo import DEMO_MODEL
    from lipsync_core.toy.proof import case_figures, dub_cases, library_lipsync

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--whisper", type=Path, required=True, help="transformers Whisper tiny.en folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clips", type=int, default=3, help="cases per world seed")
    parser.add_argument("--max-frames", type=int, default=100)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "toy_proof.json")
    parser.add_argument("--base", type=Path, default=None, help="ComfyUI base folder (default: a temporary one)")
    args = parser.parse_args()

    started, load_before = time.time(), machine()
    loaded = inference.load_model(args.model)
    whisper = inference.load_whisper(args.whisper)
    defaults = loaded.model.defaults
    base = args.base or Path(tempfile.mkdtemp(prefix="toy_proof_"))
    model_name = "toy_proof_model.safetensors"
    (base / "models" / "sayanything").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model, base / "models" / "sayanything" / model_name)
    shutil.copytree(args.whisper, base / "models" / "whisper" / WHISPER_FOLDER, dirs_exist_ok=True)
    (base / "input").mkdir(parents=True, exist_ok=True)

    server = ComfyServer(base).start()
    client = ComfyClient(server.url)
    object_info = client.object_info()
    results: dict = {"model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
                     "defaults": json.loads(defaults.to_json()), "seeds": {}, "machine_before": load_before}
    all_cases, outputs = [], {"comfyui": ([], []), "library": ([], [])}
    try:
        for seed in args.seeds:
            cases = dub_cases(seed, args.clips, args.max_frames)
            per_seed = {"comfyui": ([], []), "library": ([], [])}
            for case in cases:
                silence = np.zeros_like(case.speech)
                video_name, track_name = f"{case.name}.mp4", f"{case.name}.npz"
                inference.write_video(base / "input" / video_name, _float(case.video), 25.0,
                                      _audio(case.source_audio))
                case.face_track().save(base / "input" / track_name)
                for kind, speech in (("speech", case.speech), ("silence", silence)):
                    speech_name = f"{case.name}-{kind}.wav"
                    write_wav(base / "input" / speech_name, speech)
                    prompt = workflow_prompt(object_info, video_name, speech_name, track_name, model_name, defaults,
                                             f"{case.name}-{kind}")
                    result = client.run(prompt, timeout=1800)
                    if result.status != "success":
                        raise RuntimeError(f"{case.name} {kind}: {result.status} {result.error}\n{server.log_tail()}")
                    video = [p for p in client.output_files(result.prompt_id, base) if p.suffix == ".mp4"][0]
                    slot = 0 if kind == "speech" else 1
                    per_seed["comfyui"][slot].append(read_mp4(video))
                    per_seed["library"][slot].append(library_lipsync(case, speech, loaded, whisper))
                    print(f"[proof] {case.name} ({case.style}) {kind} done ({time.time() - started:.0f} s)",
                          file=sys.stderr)
            results["seeds"][str(seed)] = {path: case_figures(cases, *videos) for path, videos in per_seed.items()}
            all_cases += cases
            for path in outputs:
                outputs[path][0].extend(per_seed[path][0])
                outputs[path][1].extend(per_seed[path][1])
    finally:
        client.close()
        server.stop()
    results["pooled"] = {path: case_figures(all_cases, *videos) for path, videos in outputs.items()}
    results["styles"] = [case.style for case in all_cases]
    results["seconds"] = round(time.time() - started, 1)
    results["machine_after"] = machine()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["pooled"], indent=2))
    print(args.output)
    return 0


def _float(frames: np.ndarray):
    import torch

    return torch.from_numpy(frames).float() / 255.0


def _audio(waveform: np.ndarray):
    import torch

    from lipsync_core.audio import Audio

    return Audio(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), 16000)


if __name__ == "__main__":
    raise SystemExit(main())
