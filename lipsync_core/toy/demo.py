"""Inputs for the headless demo: a generated character with a still, closed mouth and espeak speech.

The shipped toy model (``DEMO_MODEL``) makes the character talk. Mediapipe does not see these drawn
faces, so the demo hands the character's synthetic face track to the preprocessing
(``face.prepare_face_crops(..., track=...)``) instead of detecting one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "toy_sayanything.safetensors"


def demo_inputs(text: str = "Hello there. I learned to talk from a tiny world of drawn faces.",
                voice: str = "en-us", speed: int = 150, seed: int = 7, crop_size: int = 64, fps: float = 25.0):
    """``(frames uint8 [T, S, S, 3], track FaceTrack, audio Audio)``: the source video has the mouth closed throughout."""
    import torch

    from ..audio import Audio
    from ..face import FaceTrack
    from .characters import Character
    from .speech import compose, speak
    from .world import render_clip

    character = Character.random(np.random.default_rng([seed, 10_000]), 2 * crop_size)
    utterance = compose([speak(text, voice, speed)], [0.4, 0.5], fps)
    count = len(utterance.opening)
    closed = np.zeros(count, np.float32)
    frames, landmarks = render_clip(character, closed, np.full(count, 0.5, np.float32), crop_size,
                                    np.random.default_rng(seed))
    track = FaceTrack(landmarks, np.ones(count, bool), (crop_size, crop_size))
    return frames, track, Audio(torch.from_numpy(utterance.waveform), 16000)
