"""The headless demo: a generated character, talking in its own video, dubbed with a new sentence.

The source video shows the character saying one sentence (mouth and jaw moving); the shipped toy
model (``DEMO_MODEL``) makes it say another, espeak-ng, sentence. Mediapipe finds most of these drawn
faces but not all, so the demo hands the character's known face track to the pipeline instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import Audio
from ..checkpoint import load
from ..inference import load_whisper, write_video
from ..tensors import uint8_to_frames
from .characters import Character
from .proof import DubCase, _samples, library_lipsync
from .speech import compose, speak
from .world import render_clip

DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "toy_sayanything.safetensors"
# The Mouth Motion from Audio model trained on the same world (`train-motion`, hidden_dim 96, 1200 steps).
DEMO_MOTION_MODEL = Path(__file__).resolve().parent / "assets" / "toy_mouth_motion.safetensors"
SOURCE_SENTENCE = "The wide road shimmered in the hot sun. The lazy cow lay in the cool grass."


def demo_inputs(text: str = "Hello there. I learned to talk from a tiny world of drawn faces.",
                voice: str = "en-us", speed: int = 150, seed: int = 7, video_size: int = 80, fps: float = 25.0):
    """A :class:`proof.DubCase`: the talking source video (saying ``SOURCE_SENTENCE`` in another voice),
    its face track, and ``text`` as the new speech."""

    character = Character.random(np.random.default_rng([seed, 10_000]), 2 * video_size)
    new = compose([speak(text, voice, speed)], [0.4, 0.5], fps)
    count = len(new.opening)
    source = compose([speak(SOURCE_SENTENCE, "en-gb+f2", 165)], [0.1, 0.3], fps)
    opening, width = (np.resize(values, count) for values in (source.opening, source.width))  # repeat if short
    video, landmarks = render_clip(character, opening, width, video_size, np.random.default_rng(seed), fps)
    speech = np.zeros(_samples(count, fps), np.float32)
    speech[: min(len(speech), len(new.waveform))] = new.waveform[: len(speech)]
    return DubCase(name="demo", style=character.style, video=video, landmarks=landmarks,
                   source_audio=np.resize(source.waveform, len(speech)), source_opening=opening, speech=speech,
                   opening=new.opening, silent=new.silent)


def demo_lipsync(whisper_dir, model=DEMO_MODEL, seed: int = 7, fps: float = 25.0, progress=None):
    """The demo character made to say the new sentence by ``model`` through ``dubbing.lipsync``, at the
    model file's own defaults. Returns ``(frames float [T, V, V, 3] 0..1, case)``."""
    case = demo_inputs(seed=seed, fps=fps)
    frames = library_lipsync(case, case.speech, load(model), load_whisper(whisper_dir), fps=fps, progress=progress)
    return uint8_to_frames(frames), case


def render_demo(output, whisper_dir, model=DEMO_MODEL, seed: int = 7, scale: int = 4, progress=None):
    """Write the demo as an mp4 with the new speech, enlarged ``scale`` times (the toy video is 80 px):
    the source video on the left, the dubbed one on the right."""
    frames, case = demo_lipsync(whisper_dir, model, seed=seed, progress=progress)
    both = torch.cat([uint8_to_frames(case.video), frames], dim=2)
    large = F.interpolate(both.permute(0, 3, 1, 2), scale_factor=scale, mode="nearest").permute(0, 2, 3, 1)
    return write_video(output, large, 25.0, Audio(torch.from_numpy(case.speech), 16000))
