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
    """``(frames uint8 [T, S, S, 3], track FaceTrack, audio Audio)``: the source video has the mouth closed
    throughout."""
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


def demo_lipsync(whisper_dir, model=DEMO_MODEL, seed: int = 7, fps: float = 25.0, callback=None):
    """The demo character made to speak by ``model`` through the shared pipeline (``inference.lipsync``).

    Returns ``(frames float [T, S, S, 3] 0..1, track, audio)``; the sampler settings are the toy
    evaluation's (10 steps, 8-frame windows, no canvas noise, as the toy model was trained).
    """
    import torch

    from .. import inference

    frames, track, audio = demo_inputs(seed=seed, fps=fps)
    loaded = inference.load_model(model)
    whisper = inference.load_whisper(whisper_dir)
    num_frames = loaded.model.config.unet.num_frames
    options = inference.SamplerOptions(steps=10, seed=0, reference_guidance=1.0, audio_guidance=2.0,
                                       window=num_frames, overlap=num_frames // 4, noise_aug_strength=0.0)
    pixels = torch.from_numpy(frames).float() / 255.0
    result, audio, _mask = inference.lipsync(
        pixels, fps, audio, loaded, whisper, options, face_options=inference.FaceOptions(crop_size=frames.shape[1]),
        fit_mode="cut", track=track, callback=callback)
    return result, track, audio


def render_demo(output, whisper_dir, model=DEMO_MODEL, seed: int = 7, scale: int = 4, callback=None):
    """Write the demo as an mp4 with its speech, enlarged ``scale`` times (the toy crops are 64 px)."""
    import torch.nn.functional as F

    from .. import inference

    frames, _track, audio = demo_lipsync(whisper_dir, model, seed=seed, callback=callback)
    large = F.interpolate(frames.permute(0, 3, 1, 2), scale_factor=scale, mode="nearest").permute(0, 2, 3, 1)
    return inference.write_video(output, large, 25.0, audio)
