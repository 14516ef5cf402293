"""The toy model's proof through the user's path: generated talking videos dubbed with new speech.

Usage: python tools/toy_proof.py [--model M] [--whisper DIR] [--seeds 1 2] [--clips 3] [--output JSON]

For every case of ``lipsync_core.toy.proof.dub_cases`` (held-out characters of world seeds the model
never saw, each a talking source, plus another clip's sentence) the model dubs the video twice on
each path -- with the new sentence and with silence (LipLeak):

- ``comfyui_mediapipe``: a private real server (tools/comfy_client.py) runs the pack's example
  workflow ``workflows/sayanything_video_lipsync.json`` over HTTP, exactly as it ships but for its
  input files (the mp4 and a wav), mediapipe tracking the drawn face -- on the cases where mediapipe
  finds it in every frame (it misses some characters);
- ``comfyui_face_track``: the same workflow with its face node swapped for ``SayAnything Load Face
  Track`` reading the character's known track (.npz), on every case;
- ``library``: ``dubbing.lipsync`` with the known track.

The saved mp4s are decoded and measured.

Every sampler and crop setting is left on ``auto``: the model file's ``defaults``. Figures
(``proof.case_figures``) per path and seed and pooled go to the JSON, with the machine and its load.
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
PATHS = ("comfyui_face_track", "comfyui_mediapipe", "library")


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


def workflow_prompt(object_info: dict, video: str, speech: str, track: str | None, model: str, prefix: str) -> dict:
    """The example video workflow as an API prompt on these inputs. Its sampler and crop widgets stay
    on ``auto`` (the model file's own settings), as the workflow ships. ``track``: a FaceTrack .npz in
    the input folder replaces mediapipe tracking (None: the face node tracks, as shipped)."""
    prompt = workflow_to_api(load_workflow(WORKFLOW), object_info)
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        # Same outputs (mask, face_track, preview): the links stay.
        if kind == "SayAnythingFaceMask" and track is not None:
            prompt[node_id] = {"class_type": "SayAnythingLoadFaceTrack", "inputs": {
                "images": inputs["images"], "track_file": track, "fps": inputs["fps"],
                **{name: inputs[name] for name in ("upper_edge", "expand", "feather", "mask_hold") if name in inputs}}}
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
    return prompt


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version()}


def main() -> int:
    from lipsync_core import inference
    from lipsync_core.checkpoint import load
    from lipsync_core.face import track_faces
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
    parser.add_argument("--picture", type=Path, default=None,
                        help="write the first workflow case as rows: source, dubbed, dubbed with silence")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads here and in the server (1 is far faster on a CPU other jobs share)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits it

    started = time.time()
    loaded = load(args.model)
    whisper = inference.load_whisper(args.whisper)
    results: dict = {"model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
                     "defaults": json.loads(loaded.defaults.to_json()), "world_seeds": args.seeds,
                     "machine_before": machine(), "paths": {}}
    base = args.base or Path(tempfile.mkdtemp(prefix="toy_proof_"))
    model_name = "toy_proof_model.safetensors"
    (base / "models" / "sayanything").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model, base / "models" / "sayanything" / model_name)
    shutil.copytree(args.whisper, base / "models" / "whisper" / WHISPER_FOLDER, dirs_exist_ok=True)
    (base / "input").mkdir(parents=True, exist_ok=True)

    server = ComfyServer(base).start()
    client = ComfyClient(server.url)
    object_info = client.object_info()

    def comfyui(case, kind: str, speech: np.ndarray, track: str | None) -> np.ndarray:
        speech_name = f"{case.name}-{kind}.wav"
        write_wav(base / "input" / speech_name, speech)
        prompt = workflow_prompt(object_info, f"{case.name}.mp4", speech_name, track, model_name,
                                 f"{case.name}-{kind}-{'track' if track else 'mediapipe'}")
        result = client.run(prompt, timeout=1800)
        if result.status != "success":
            raise RuntimeError(f"{case.name} {kind}: {result.status} {result.error}\n{server.log_tail()}")
        return read_mp4([p for p in client.output_files(result.prompt_id, base) if p.suffix == ".mp4"][0])

    # path -> seed -> (cases, dubbed with the new speech, dubbed with silence)
    runs: dict[str, dict[int, tuple[list, list, list]]] = {p: {} for p in PATHS}
    timings: dict[str, list[float]] = {p: [] for p in PATHS}
    try:
        for seed in args.seeds:
            for case in dub_cases(seed, args.clips, args.max_frames):
                inference.write_video(base / "input" / f"{case.name}.mp4", _float(case.video), 25.0,
                                      _audio(case.source_audio))
                case.face_track().save(base / "input" / f"{case.name}.npz")
                tracked = track_faces(case.video, fps=25.0).found.all()  # does mediapipe see this character?
                for kind, speech in (("speech", case.speech), ("silence", np.zeros_like(case.speech))):
                    makers = {"comfyui_face_track": (comfyui, (case, kind, speech, f"{case.name}.npz")),
                              "library": (library_lipsync, (case, speech, loaded, whisper))}
                    if tracked:  # the workflow exactly as it ships: mediapipe tracks the drawn face
                        makers["comfyui_mediapipe"] = (comfyui, (case, kind, speech, None))
                    for path, (make, make_args) in makers.items():
                        mark = time.time()
                        video = make(*make_args)
                        timings[path].append(time.time() - mark)
                        cases, dubbed, silenced = runs[path].setdefault(seed, ([], [], []))
                        if kind == "speech":
                            cases.append(case)
                            dubbed.append(video)
                        else:
                            silenced.append(video)
                print(f"[proof] {case.name} ({case.style}, mediapipe {'tracks' if tracked else 'misses'} it) "
                      f"done ({time.time() - started:.0f} s)", file=sys.stderr)
    finally:
        client.close()
        server.stop()
    for path, by_seed in runs.items():
        results["paths"][path] = {"seeds": {str(seed): case_figures(*run) for seed, run in by_seed.items()},
                                  "pooled": case_figures(*(sum((run[k] for run in by_seed.values()), [])
                                                           for k in range(3))) if by_seed else None,
                                  "styles": [c.style for run in by_seed.values() for c in run[0]],
                                  "seconds_per_dub": round(float(np.mean(timings[path])), 1) if timings[path]
                                  else None}
    if args.picture is not None:
        write_picture(args.picture, runs["comfyui_face_track"])
    results["seconds"] = round(time.time() - started, 1)
    results["threads"] = args.threads
    results["machine_after"] = machine()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({p: r["pooled"] for p, r in results["paths"].items()}, indent=2))
    print(args.output)
    return 0


def write_picture(path: Path, by_seed: dict, count: int = 10) -> None:
    """The first case of the first seed: its source, its dub and its silent dub, ``count`` frames each."""
    import cv2

    cases, dubbed, silenced = next(iter(by_seed.values()))
    picks = np.linspace(0, len(cases[0].video) - 1, count).round().astype(int)
    rows = [np.concatenate(list(video[picks]), axis=1) for video in (cases[0].video, dubbed[0], silenced[0])]
    picture = cv2.resize(np.concatenate(rows, axis=0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(picture[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])


def _float(frames: np.ndarray):
    import torch

    return torch.from_numpy(frames).float() / 255.0


def _audio(waveform: np.ndarray):
    import torch

    from lipsync_core.audio import Audio

    return Audio(torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), 16000)


if __name__ == "__main__":
    raise SystemExit(main())
